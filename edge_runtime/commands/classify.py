"""``edge-runtime classify``: the top classes of image files, as a table or JSON lines."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_runtime.model import LoadedModel

EXAMPLES = """\
examples:
  edge-runtime classify bird.bmp parrot.jpg --model mobilenet_v1_0.25_128_quant.tflite
  edge-runtime classify photos/*.jpg --model models/traffic-signs --top-k 3 --json
  edge-runtime classify sign.png --model model.onnx --labels labels.txt --backend onnxruntime
  edge-runtime classify photos/ --model models/traffic-signs --save annotated/

--json prints one object per image:
  {"image": "bird.bmp", "top": [{"index": 20, "label": "chickadee", "score": 0.51}, ...]}
Scores are probabilities. An unreadable image, or one declaring more than --max-pixels pixels, is
reported on stderr and skipped; the exit code is then 1.
"""


def add_model_arguments(parser: argparse.ArgumentParser, *, labels: bool = True) -> None:
    """The options that choose a model, its backend and its settings (shared with ``bench``)."""
    parser.add_argument(
        "--model",
        "-m",
        required=True,
        metavar="M",
        help="a bundle directory or .tar, a .tflite or an .onnx file",
    )
    if labels:
        parser.add_argument(
            "--labels",
            metavar="FILE",
            help="label file, one name per line (default: the labels the model carries)",
        )
    parser.add_argument(
        "--backend",
        default="auto",
        metavar="NAME",
        help="auto (by file format and device profile), litert or onnxruntime (default: auto)",
    )
    parser.add_argument(
        "--artifact", metavar="FILE", help="which artifact of a bundle, e.g. model-int8.tflite"
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "int8", "fp16", "dynamic", "fp32"),
        help="run the bundle's artifact of this precision; auto (the default) times them on "
        "this device once and runs the fastest that passed the accuracy gate",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="inference threads (default: the device profile's; 0 = all cores)",
    )
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help="device profile name or .toml file (default: detected, e.g. raspberry-pi-5)",
    )


def load_model_from_args(args: argparse.Namespace, **overrides: Any) -> LoadedModel:
    """Load the model the shared options describe; ``overrides`` replace load_model arguments.

    Raises:
        EdgeRuntimeError: anything :func:`edge_runtime.model.load_model` raises.
    """
    from devices import profile_for_this_device
    from edge_runtime.artifacts import resolve_profile
    from edge_runtime.model import load_model, options_from_profile

    profile = (
        resolve_profile(args.profile) if args.profile is not None else profile_for_this_device()
    )
    kwargs: dict[str, Any] = {
        "labels": getattr(args, "labels", None),
        "backend": args.backend,
        "artifact": args.artifact,
        "precision": args.precision or "auto",
        "profile": profile,
        "options": options_from_profile(profile, threads=args.threads),
    }
    kwargs.update(overrides)
    return load_model(args.model, **kwargs)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "classify",
        help="classify image files and print their top classes",
        description="Classify image files with a bundle, a .tflite or an .onnx model.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files, folders (recursive) or globs"
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--top-k", "-k", type=int, default=5, metavar="K", help="classes per image (default: 5)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument(
        "--save",
        metavar="DIR",
        help="also write each image with its best class drawn on it into DIR",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help="skip images declaring more pixels, before decoding them (default: 50000000)",
    )
    parser.set_defaults(handler=run)


def _table(image: str, top: list[Any]) -> str:
    from edge_runtime.terminal import printable

    # Labels and file names may hold terminal escape sequences: shown escaped, never obeyed.
    lines = [printable(image), f"  {'#':>2}  {'index':>5}  {'score':>7}  label"]
    for rank, item in enumerate(top, start=1):
        lines.append(f"  {rank:>2}  {item.index:>5}  {item.score:>7.4f}  {printable(item.label)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Classify every image; 1 when any could not be read, else 0.

    Raises:
        EdgeRuntimeError: the model cannot be loaded or run, or a bad option.
    """
    from edge_runtime.errors import ConfigError, PreprocessError
    from edge_runtime.imageio import DEFAULT_MAX_PIXELS, read_image
    from edge_runtime.terminal import json_text, printable

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    if max_pixels < 1:
        raise ConfigError(f"--max-pixels must be at least 1, got {max_pixels}")
    failures = 0
    if args.save:
        _make_folder(args.save)
    with load_model_from_args(args) as model:
        paths, missing = _expand(args.images)
        for problem in missing:
            print(f"edge-runtime: error: {printable(problem)}", file=sys.stderr, flush=True)
            failures += 1
        shown = 0
        for path in paths:
            try:
                image = read_image(path, max_pixels=max_pixels)
            except PreprocessError as exc:
                print(f"edge-runtime: error: {printable(exc)}", file=sys.stderr, flush=True)
                failures += 1
                continue
            top = model.classify(image, args.top_k)
            if args.save:
                failures += _save_annotated(args.save, path, image, top)
            if args.json:
                record = {
                    "image": path,
                    "top": [
                        {"index": c.index, "label": c.label, "score": round(c.score, 6)}
                        for c in top
                    ],
                }
                print(json_text(record), flush=True)
            else:
                if shown:
                    print()
                print(_table(path, top), flush=True)
            shown += 1
    return 1 if failures else 0


def _expand(items: list[str]) -> tuple[list[str], list[str]]:
    """Files for the arguments: a file as it is, a folder's or a glob's images in order (as
    ``run`` reads them); the problems of arguments naming nothing."""
    from edge_runtime.errors import SourceError
    from edge_runtime.imageio import is_image_path
    from edge_runtime.sources.files import list_image_candidates

    paths: list[str] = []
    problems: list[str] = []
    for item in items:
        if os.path.isfile(item):
            paths.append(item)
            continue
        try:
            found = list_image_candidates(item)
        except SourceError as exc:
            problems.append(str(exc))
            continue
        paths.extend(str(p) for p in found if is_image_path(p))
    return paths, problems


def _make_folder(folder: str) -> None:
    from edge_runtime.errors import OutputError

    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc.strerror or exc}") from None


def _save_annotated(folder: str, path: str, image: Any, top: list[Any]) -> int:
    """Write the annotated copy; 1 when it could not be written (said on stderr), else 0."""
    from edge_runtime.api import annotate
    from edge_runtime.errors import OutputError
    from edge_runtime.terminal import printable
    from edge_runtime.types import Prediction

    best = top[0]
    decision = Prediction(0, 0.0, best.label, best.score, tuple(top), source=path)
    target = os.path.join(folder, os.path.splitext(os.path.basename(path))[0] + ".jpg")
    try:
        annotate(image, decision).save(target)
    except OutputError as exc:
        print(f"edge-runtime: error: {printable(exc)}", file=sys.stderr, flush=True)
        return 1
    return 0
