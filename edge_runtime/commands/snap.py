"""``edge-runtime snap``: one fresh frame, classified, saved with its label drawn on it."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_runtime.api import Model
    from edge_runtime.sources import Source
    from edge_runtime.types import Prediction

EXAMPLES = """\
examples:
  edge-runtime snap --source camera:0 --model models/traffic-signs --out snap.jpg --show
  edge-runtime snap --source synthetic:traffic-signs --model models/traffic-signs --out snap.jpg
  edge-runtime snap --source rtsp://cam.local/stream --model model.tflite --out door.png --json

The frame is a fresh one: a camera's frames queued before the command asked (a V4L2 driver
hands those out first) are skipped. The picture is written with the label and score drawn as
its title and the top classes as bars; --show also opens it in a window where there is a
display, and says so where there is none.
"""


def register(subparsers: Any) -> None:
    from edge_runtime.commands.classify import add_model_arguments

    parser = subparsers.add_parser(
        "snap",
        help="take one fresh frame, classify it and save it with its label drawn on",
        description="Take one fresh frame from a source, classify it, and write the picture "
        "with the label and score drawn on it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--source", "-s", required=True, metavar="URI", help="where to look")
    add_model_arguments(parser)
    parser.add_argument(
        "--out", "-o", required=True, metavar="FILE", help="the picture to write (.jpg, .png)"
    )
    parser.add_argument("--show", action="store_true", help="also show it in a window")
    parser.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="minimum confidence, below it 'unknown' (default: the bundle's)",
    )
    parser.add_argument(
        "--top-k", "-k", type=int, default=3, metavar="K", help="classes drawn (default: 3)"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="wait at most S s for a frame"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run)


@dataclass(frozen=True)
class Snap:
    """What :func:`take_snap` did: the file written and the decision drawn on it."""

    path: Path
    prediction: Prediction


def take_snap(
    source: Source,
    model: Model,
    out: str | Path,
    *,
    threshold: float | None = None,
    top_k: int = 3,
    timeout: float = 10.0,
) -> Snap:
    """One fresh frame of ``source`` (see :meth:`Source.snapshot`), classified by ``model``,
    written to ``out`` with the decision drawn on it. The source is left open.

    Raises:
        SourceError: no fresh frame within ``timeout``.
        OutputError: the picture cannot be written.
        EdgeRuntimeError: the model cannot classify it.
    """
    from edge_runtime.api import annotate

    frame = source.snapshot(timeout=timeout)
    prediction = model.classify(frame, top_k=top_k, threshold=threshold)
    path = annotate(frame, prediction).save(out)
    return Snap(path, prediction)


def run(args: argparse.Namespace) -> int:
    """Snap, save, print the decision (and show it where there is a display).

    Raises:
        EdgeRuntimeError: bad options, a source or model that cannot be opened, no fresh frame,
            a picture that cannot be written.
    """
    from edge_runtime.api import Model, display_problem, show_window
    from edge_runtime.commands.classify import load_model_from_args
    from edge_runtime.errors import ConfigError, OutputError
    from edge_runtime.imageio import read_image
    from edge_runtime.sources import open_source
    from edge_runtime.terminal import json_text, printable

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {args.top_k}")
    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be more than 0 s, got {args.timeout:g}")
    source = open_source(args.source)  # a bad URI fails before the model loads
    with Model(load_model_from_args(args)) as model, source:
        snap = take_snap(
            source,
            model,
            args.out,
            threshold=args.threshold,
            top_k=args.top_k,
            timeout=args.timeout,
        )
    prediction = snap.prediction
    if args.json:
        print(json_text({"image": str(snap.path), **prediction.to_dict()}), flush=True)
    else:
        note = "" if model.threshold > 0 or args.threshold else "  (no threshold: bare model)"
        print(
            printable(f"{snap.path}: {prediction.label} {prediction.score:.3f}{note}"), flush=True
        )
    if args.show:
        problem = display_problem()
        if problem is not None:
            print(f"edge-runtime: no window: {problem}; the picture is in {snap.path}",
                  file=sys.stderr)
            return 0
        try:
            show_window(read_image(snap.path), f"{prediction.label} {prediction.score:.2f}")
        except OutputError as exc:
            print(f"edge-runtime: {printable(exc)}; the picture is in {snap.path}",
                  file=sys.stderr)
    return 0
