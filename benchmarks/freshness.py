"""Frame age at inference: the latest-wins hand-off against the FIFO of two it replaced.

A live camera at 100 fps (real time, a preallocated 640x480 frame) feeds the pipelined runtime;
the model is a stand-in whose inference sleeps 50 ms (``--model-ms``), or a real model
(``--model``). Both hand-offs run in one process, alternating, with the pipeline's own timestamps:
frame age at the start of inference and at decision, results per second against 1 / inference.
The FIFO is the pipeline's file-source queue (``PreparedFrameQueue``, depth 2), which is what
live frames went through before.

    python benchmarks/freshness.py
    python benchmarks/freshness.py --model models/banknotes --camera-fps 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_line  # noqa: E402


class SleepingModel:
    """A model whose inference takes ``ms`` milliseconds (a sleep: it leaves the CPU free)."""

    def __init__(self, ms: float) -> None:
        import numpy as np

        self.ms = ms
        self.info = {"name": f"sleep {ms:g} ms"}
        self._np = np

    def new_input(self) -> Any:
        return self._np.zeros(1, self._np.int64)

    def prepare(self, image: Any, out: Any = None) -> Any:
        out[0] = int(image[0, 0, 0])
        return out

    def infer(self, tensor: Any) -> Any:
        time.sleep(self.ms / 1e3)
        probabilities = self._np.zeros(4, self._np.float32)
        probabilities[0] = 1.0
        return probabilities

    def close(self) -> None:
        pass


def camera(fps: float) -> Any:
    import numpy as np

    from edge_runtime.sources.live import PacedFrames

    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return PacedFrames([image], fps)


def run(model: Any, post: Any, fps: float, frames: int, handoff: str) -> dict[str, Any]:
    from edge_runtime.pipeline import Pipeline, PipelineOptions, PreparedFrameQueue

    pipeline = Pipeline(camera(fps), model, post, [], options=PipelineOptions(max_frames=frames))
    if handoff == "fifo of 2 (before)":
        pipeline._handoff = lambda: PreparedFrameQueue(2, pipeline._stop)  # type: ignore[method-assign]
    ages: list[float] = []
    inference: list[float] = []
    preprocess: list[float] = []
    pipeline.status.add_observer(lambda p: ages.append(p.latency_ms["age_at_inference"]))
    pipeline.status.add_observer(lambda p: inference.append(p.latency_ms["inference"]))
    pipeline.status.add_observer(lambda p: preprocess.append(p.latency_ms["preprocess"]))
    summary = pipeline.run()
    latency = summary.status["latency_ms"]
    bound = [i + p for i, p in zip(inference, preprocess)]
    return {
        "handoff": handoff,
        "fps": summary.fps,
        "fps_over_invoke": summary.fps * statistics.fmean(inference) / 1e3,
        "age_p50": statistics.median(ages),
        "age_p95": float(sorted(ages)[int(0.95 * (len(ages) - 1))]),
        "age_max": max(ages[1:]) if len(ages) > 1 else ages[0],
        "over_bound": sum(a >= b for a, b in zip(ages[1:], bound[1:])),
        "decision_p50": latency["total"]["p50"],
        "inference_p50": statistics.median(inference),
        "preprocess_p50": statistics.median(preprocess),
        "results": summary.frames,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a real model instead of the 50 ms sleeper")
    parser.add_argument("--model-ms", type=float, default=50.0)
    parser.add_argument("--camera-fps", type=float, default=100.0)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    if args.model is not None:
        from edge_runtime.backends import BackendOptions
        from edge_runtime.model import load_model

        model = load_model(args.model, options=BackendOptions(threads=args.threads))
        post = model.postprocessor()
        title = f"{model.info['name']} {model.info['artifact']}"
    else:
        from edge_runtime.postprocess import PostprocessConfig, Postprocessor

        model = SleepingModel(args.model_ms)
        post = Postprocessor(["a", "b", "c", "d"], PostprocessConfig(activation="none"))
        title = f"stand-in model, inference {args.model_ms:g} ms (sleep)"
    results: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for handoff in ("latest-wins slot", "fifo of 2 (before)"):
            results.setdefault(handoff, []).append(
                run(model, post, args.camera_fps, args.frames, handoff)
            )
    print(machine_line())
    print(f"{title}; camera {args.camera_fps:g} fps; {args.frames} results x {args.rounds} runs")
    print()
    print("| hand-off | results/s | x 1/inference | frame age at inference p50 / p95 / max | "
          "frames older than inference + preprocess | age at decision p50 |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for handoff, runs in results.items():
        def mean(key: str, rows: list[dict[str, Any]] = runs) -> float:
            return statistics.fmean(r[key] for r in rows)

        over = sum(r["over_bound"] for r in runs)
        counted = sum(r["results"] - 1 for r in runs)
        print(
            f"| {handoff} | {mean('fps'):.1f} | {mean('fps_over_invoke'):.2f} | "
            f"{mean('age_p50'):.1f} / {mean('age_p95'):.1f} / {max(r['age_max'] for r in runs):.1f}"
            f" ms | {over} of {counted} | {mean('decision_p50'):.1f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
