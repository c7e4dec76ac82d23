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
Then the same frames from a paced live camera (--camera-fps) through the real pipelined
runtime: results per second and each frame's age from capture to the start of its inference
and to its decision. For a bundle, the end says which artifact precision "auto" takes on this
device (the fastest inference p50 whose accuracy passed the exporter's gate).
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
    parser.add_argument(
        "--camera-fps",
        type=float,
        default=100.0,
        metavar="FPS",
        help="rate of the paced live camera for the frame-age run (default: 100; 0 = skip it)",
    )
    parser.add_argument(
        "--live-frames",
        type=int,
        default=60,
        metavar="N",
        help="results of the live frame-age run (default: 60)",
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
        if args.precision not in (None, "auto"):
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


def measure_live(model: Any, frames: list[Any], fps: float, count: int) -> dict[str, Any]:
    """``count`` results of the pipelined runtime fed by a camera paced at ``fps``: results per
    second and the frames' ages (capture to inference start, capture to decision)."""
    from edge_runtime.pipeline import Pipeline, PipelineOptions
    from edge_runtime.sources.live import PacedFrames

    pipeline = Pipeline(
        PacedFrames(frames, fps, "bench-camera"),
        model,
        model.postprocessor(),
        [],
        options=PipelineOptions(max_frames=count),
    )
    summary = pipeline.run()
    latency = summary.status.get("latency_ms", {})
    return {
        "camera_fps": fps,
        "results": summary.frames,
        "fps": round(summary.fps, 2),
        "superseded": summary.superseded,
        "age_at_inference_ms": latency.get("age_at_inference", {}),
        "age_at_decision_ms": latency.get("total", {}),
    }


def auto_choice(args: argparse.Namespace, results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What ``precision = "auto"`` takes, judged on this run's inference p50 of each artifact
    (None for a bare model, or when fewer than two artifacts ran)."""
    from edge_runtime.artifacts import resolve_profile
    from edge_runtime.bundle import load_bundle
    from edge_runtime.model import artifact_candidates, model_kind
    from edge_runtime.selection import ArtifactTiming, choose_measured, gate_verdict

    timed = [r for r in results if r["model"].get("precision") is not None]
    if model_kind(Path(args.model)) != "bundle" or len(timed) < 2:
        return None
    from devices import profile_for_this_device

    profile = (
        resolve_profile(args.profile) if args.profile is not None else profile_for_this_device()
    )
    with load_bundle(Path(args.model)) as bundle:
        manifest = bundle.manifest
        order = [a.path for a in artifact_candidates(manifest, profile=profile)]
        timings = []
        for result in timed:
            info = result["model"]
            eligible, reason = gate_verdict(manifest, manifest.artifact(info["artifact"]))
            timings.append(
                ArtifactTiming(
                    info["artifact"], info["format"], info["precision"], info["backend"],
                    result["latency_ms"]["inference"]["p50"], result["frames"], eligible, reason,
                )
            )  # fmt: skip
    chosen = choose_measured(timings, order)
    return {
        "auto_choice": chosen.artifact if chosen is not None else None,
        "backend": chosen.backend if chosen is not None else None,
        "timings": [t.to_json() for t in timings],
    }


def _human_choice(choice: dict[str, Any]) -> str:
    lines = ['precision "auto" on this device (inference p50; the exporter\'s accuracy gate):']
    for row in choice["timings"]:
        mark = "->" if row["artifact"] == choice["auto_choice"] else "  "
        verdict = "eligible" if row["eligible"] else "not eligible"
        lines.append(
            f"  {mark} {row['artifact']:<24}{row['backend']:<13}{row['median_ms']:>9.3f} ms"
            f"  {verdict}: {row['reason']}"
        )
    lines.append(f"  chooses {choice['auto_choice'] or 'nothing (profile order)'}")
    return "\n".join(lines)


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
    live = result.get("live")
    if live:
        ages = (live["age_at_inference_ms"], live["age_at_decision_ms"])
        lines.append(
            f"  live camera {live['camera_fps']:g} fps, pipelined: {live['fps']:.1f} results/s,"
            f" frame age at inference p50 {ages[0].get('p50', 0):.2f} / p99 "
            f"{ages[0].get('p99', 0):.2f} ms, at decision p50 {ages[1].get('p50', 0):.2f} / p99 "
            f"{ages[1].get('p99', 0):.2f} ms"
        )
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
    if not 0 <= args.camera_fps <= 10_000 or args.live_frames < 1:
        raise ConfigError("--camera-fps must be 0..10000 and --live-frames at least 1")
    width, height = parse_frame_size(args.frame_size)
    frames = _synthetic_frames(width, height)
    ran = 0
    results: list[dict[str, Any]] = []
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
            if args.camera_fps > 0:
                figures["live"] = measure_live(model, frames, args.camera_fps, args.live_frames)
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
        results.append(result)
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            if number:
                print()
            print(printable_lines(_human(result)), flush=True)
    choice = auto_choice(args, results) if args.precision in (None, "auto") else None
    if choice is not None:
        if args.json:
            print(json.dumps(choice), flush=True)
        else:
            print()
            print(printable_lines(_human_choice(choice)), flush=True)
    return 0 if ran else 1
