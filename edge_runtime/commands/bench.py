"""``edge-runtime bench``: per-stage latency, throughput and memory of a model on this device.

Frames are synthetic (random pixels from a fixed seed, at a camera-like size), so the numbers
depend on the model, the backend and the device only. Each artifact of a bundle runs with every
backend that can run it, unless ``--artifact`` / ``--backend`` / ``--precision`` narrow it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from edge_runtime.commands.classify import add_model_arguments, load_model_from_args

EXAMPLES = """\
examples:
  edge-runtime bench --model models/traffic-signs --frames 200
  edge-runtime bench --model mobilenet_v1_0.25_128_quant.tflite --threads 2 --json
  edge-runtime bench --model bundle.tar --artifact model-int8.tflite --frame-size 1280x720

For each artifact and backend: p50/p95/p99 latency of preprocess (resize into the input tensor),
inference (the backend's run) and postprocess (dequantize, softmax when needed, top-k and the
bundle's thresholds into a prediction), frames per second over
the whole loop, and the process's peak resident memory so far (it only grows from run to run).
"""

STAGES = ("preprocess", "inference", "postprocess", "total")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure per-stage latency, FPS and memory of a model",
        description="Benchmark a model on synthetic frames, per artifact and backend.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser, labels=False)
    parser.add_argument(
        "--frames", type=int, default=200, metavar="N", help="measured frames (default: 200)"
    )
    parser.add_argument(
        "--warmup", type=int, default=10, metavar="N", help="unmeasured frames first (default: 10)"
    )
    parser.add_argument(
        "--frame-size",
        default="640x480",
        metavar="WxH",
        help="size of the synthetic camera frames (default: 640x480)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(handler=run)


def parse_frame_size(text: str) -> tuple[int, int]:
    """``'640x480'`` -> ``(640, 480)``.

    Raises:
        ConfigError: not two positive numbers joined by ``x``.
    """
    from edge_runtime.errors import ConfigError

    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--frame-size must look like 640x480, got '{text}'") from None
    if not (0 < width <= 8192 and 0 < height <= 8192):
        raise ConfigError(f"--frame-size must be between 1x1 and 8192x8192, got '{text}'")
    return width, height


def plan_runs(args: argparse.Namespace) -> list[tuple[str | None, str]]:
    """The (artifact, backend) pairs to measure; artifact None for a bare model file.

    Raises:
        EdgeRuntimeError: the bundle is invalid or nothing matches the choice.
    """
    from edge_runtime.backends import FORMAT_BACKENDS, check_backend_for_format
    from edge_runtime.bundle import load_bundle
    from edge_runtime.errors import BundleError
    from edge_runtime.model import model_kind
    from edge_runtime.registry import entry

    if args.backend != "auto":
        entry("backend", args.backend)  # an unknown name fails first, listing the known ones
    source = Path(args.model)
    fmt = model_kind(source)  # a missing path, a FIFO or a compressed .tar fail here
    if fmt != "bundle":
        if args.backend != "auto":
            check_backend_for_format(args.backend, fmt)
            return [(None, args.backend)]
        return [(None, name) for name in FORMAT_BACKENDS[fmt]]
    with load_bundle(source) as bundle:
        artifacts = bundle.manifest.artifacts
        if args.artifact is not None:
            artifacts = [bundle.manifest.artifact(Path(args.artifact).name)]
        if args.precision is not None:
            artifacts = [a for a in artifacts if a.precision == args.precision]
        runs: list[tuple[str | None, str]] = []
        for item in artifacts:
            able = FORMAT_BACKENDS.get(item.format, ())
            if args.backend != "auto":
                if args.artifact is not None:
                    check_backend_for_format(args.backend, item.format)
                able = tuple(b for b in able if b == args.backend)
            runs.extend((item.path, name) for name in able)
        if not runs:
            have = ", ".join(
                f"{a.path} ({a.format} {a.precision})" for a in bundle.manifest.artifacts
            )
            raise BundleError(
                f"bundle {bundle.manifest.name} has no artifact matching --artifact/--precision/"
                f"--backend; it has: {have}"
            )
        return runs


def _synthetic_frames(width: int, height: int, count: int = 4) -> list[Any]:
    import numpy as np

    rng = np.random.default_rng(20240229)
    return [rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for _ in range(count)]


def _peak_rss_mb() -> float:
    import resource

    # Linux reports kilobytes (macOS bytes; the runtime targets Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(model: Any, frames: list[Any], count: int, warmup: int) -> dict[str, Any]:
    """Run ``warmup`` then ``count`` frames through prepare, run and postprocess; the figures."""
    from edge_runtime.status import LatencyWindow

    post = model.postprocessor()
    windows = {stage: LatencyWindow(size=max(count, 1)) for stage in STAGES}
    clock = time.perf_counter
    for index in range(warmup):
        post.process(model.decode(model.run(model.prepare(frames[index % len(frames)]))))
    post.reset()
    started = clock()
    for index in range(count):
        frame = frames[index % len(frames)]
        t0 = clock()
        tensor = model.prepare(frame)
        t1 = clock()
        row = model.run(tensor)
        t2 = clock()
        post.process(model.decode(row), frame_index=index, timestamp=t0)
        t3 = clock()
        windows["preprocess"].add((t1 - t0) * 1e3)
        windows["inference"].add((t2 - t1) * 1e3)
        windows["postprocess"].add((t3 - t2) * 1e3)
        windows["total"].add((t3 - t0) * 1e3)
    elapsed = clock() - started
    return {
        "latency_ms": {stage: windows[stage].summary() for stage in STAGES},
        "fps": round(count / elapsed, 2) if elapsed > 0 else 0.0,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def _human(result: dict[str, Any]) -> str:
    info = result["model"]
    head = (
        f"{info['artifact']} ({info['format']} {info['precision'] or '?'}) on {info['backend']}"
        f" [{info['provider'] or '-'}, threads {info['threads'] or 'default'}]: "
        f"{result['frames']} frames {result['frame_size']} -> {result['input']}"
    )
    lines = [head, f"  {'stage':<12}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'mean ms':>9}"]
    for stage in STAGES:
        row = result["latency_ms"][stage]
        figures = "".join(f"{row[key]:>9.3f}" for key in ("p50", "p95", "p99", "mean"))
        lines.append(f"  {stage:<12}{figures}")
    lines.append(f"  fps {result['fps']:.1f}   peak RSS {result['peak_rss_mb']:.1f} MB")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Benchmark every planned (artifact, backend) pair; 1 when none could run.

    Raises:
        EdgeRuntimeError: a bad option, or the model cannot be loaded.
    """
    from edge_runtime.errors import ConfigError, MissingDependencyError
    from edge_runtime.terminal import printable, printable_lines

    if args.frames < 1 or args.warmup < 0:
        raise ConfigError("--frames must be at least 1 and --warmup at least 0")
    width, height = parse_frame_size(args.frame_size)
    frames = _synthetic_frames(width, height)
    ran = 0
    for number, (artifact, backend) in enumerate(plan_runs(args)):
        overrides: dict[str, Any] = {"backend": backend}
        if artifact is not None:
            overrides.update(artifact=artifact, precision=None)
        try:
            model = load_model_from_args(args, **overrides)
        except MissingDependencyError as exc:
            print(
                printable(f"edge-runtime: skipped {artifact or args.model} on {backend}: {exc}"),
                file=sys.stderr,
            )
            continue
        with model:
            if not args.quiet:
                print(
                    printable(
                        f"benchmarking {model.info['artifact']} on {model.info['backend']}: "
                        f"{args.warmup} + {args.frames} frames..."
                    ),
                    file=sys.stderr,
                    flush=True,
                )
            figures = measure(model, frames, args.frames, args.warmup)
            spec = model.preprocess_spec
            result = {
                "model": {
                    key: model.info.get(key)
                    for key in (
                        "name",
                        "version",
                        "artifact",
                        "format",
                        "precision",
                        "backend",
                        "provider",
                        "threads",
                    )
                },
                "frames": args.frames,
                "frame_size": f"{width}x{height}",
                "input": f"{spec.width}x{spec.height}",
                **figures,
            }
        ran += 1
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            if number:
                print()
            print(printable_lines(_human(result)), flush=True)
    return 0 if ran else 1
