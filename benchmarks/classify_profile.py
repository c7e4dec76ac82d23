"""Where ``LoadedModel.classify`` spends a 1280x720 frame: each step timed on its own.

For each bundled model artifact (LiteRT, the given threads), in one process, interleaved (each
step once per round, medians):

- ``classify``: the whole call (what a user pays per frame), and the same with the resize the
  runtime used before the separable area path (the integral image), for a before/after in one
  run;
- its steps: the resize (separable area path, integral image, and OpenCV's ``INTER_AREA`` for
  reference), the input writer's conversion to the tensor's dtype, ``backend.run`` (the
  ``set_tensor`` copy and ``invoke``, also timed apart), decoding the scores, the top-5 and the
  result objects;
- ``invoke`` right after a ``prepare`` against ``invoke`` alone (does preprocessing evict the
  model from the cache or let the interpreter's threads fall asleep?).

    python benchmarks/classify_profile.py
    python benchmarks/classify_profile.py --threads 1 --rounds 500
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_line  # noqa: E402


def interleaved(steps: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    for _ in range(10):
        for run in steps.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, run in steps.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


COLUMNS = (
    "classify",
    "classify, integral resize (before)",
    "resize: separable (now)",
    "resize: integral (before)",
    "resize: cv2 INTER_AREA",
    "writer: resize + dtype",
    "set_tensor",
    "invoke",
    "invoke after prepare",
    "backend.run",
    "decode",
    "top-5 + results",
)


def profile(bundle: Path, artifact: str, frame: Any, threads: int, rounds: int) -> dict:
    import cv2
    import numpy as np

    from edge_runtime.backends import BackendOptions
    from edge_runtime.model import load_model
    from edge_runtime.postprocess import top_k
    from edge_runtime.preprocess import ops
    from edge_runtime.preprocess.area import area_downscale, plan_for
    from edge_runtime.preprocess.separable import separable_downscale, separable_plan
    from edge_runtime.types import Classification

    model = load_model(bundle, artifact=artifact, options=BackendOptions(threads=threads))
    spec = model.preprocess_spec
    size = (spec.height, spec.width)
    pixels = np.empty((*size, 3), np.uint8)
    tensor = model.prepare(frame).copy()
    row = model.run(tensor).copy()
    probabilities = model.decode(row).copy()
    interpreter = model.backend._interpreter  # type: ignore[attr-defined]
    index = model.backend._input_index
    separable = separable_plan(frame.shape[0], frame.shape[1], *size)
    integral = plan_for(frame.shape[0], frame.shape[1], *size)
    assert separable is not None and integral is not None
    after_times: list[float] = []

    def classify_before() -> object:
        # The same call with the resize the runtime used before (the integral image).
        ops.separable_plan = lambda *_: None  # type: ignore[assignment]
        try:
            return model.classify(frame)
        finally:
            ops.separable_plan = separable_plan

    def after_prepare() -> None:
        model.prepare(frame)
        start = time.perf_counter()
        interpreter.invoke()
        after_times.append((time.perf_counter() - start) * 1e3)

    def results() -> object:
        return [
            Classification(int(i), model.labels[i], float(probabilities[i]))
            for i in top_k(probabilities, 5)
        ]

    steps: dict[str, Callable[[], object]] = {
        "classify": lambda: model.classify(frame),
        "classify, integral resize (before)": classify_before,
        "resize: separable (now)": lambda: separable_downscale(frame, separable, pixels),
        "resize: integral (before)": lambda: area_downscale(frame, integral, pixels),
        "resize: cv2 INTER_AREA": lambda: cv2.resize(
            frame, size[::-1], dst=pixels, interpolation=cv2.INTER_AREA
        ),
        "writer: resize + dtype": lambda: model.prepare(frame),
        "set_tensor": lambda: interpreter.set_tensor(index, tensor),
        "invoke": interpreter.invoke,
        "invoke after prepare": after_prepare,
        "backend.run": lambda: model.run(tensor),
        "decode": lambda: model.decode(row),
        "top-5 + results": results,
    }
    result = interleaved(steps, rounds)
    # that step's time includes a prepare: keep the invoke it timed itself
    result["invoke after prepare"] = statistics.median(after_times)
    model.close()
    result["classify - backend.run"] = result["classify"] - result["backend.run"]
    result["same, before"] = result["classify, integral resize (before)"] - result["backend.run"]
    return result


def main(argv: list[str] | None = None) -> int:
    from edge_runtime.scenes import SceneStream

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--models", default="traffic-signs,banknotes")
    args = parser.parse_args(argv)

    frame = SceneStream("traffic-signs", seed=3, width=1280, height=720).frame(5)[0]
    print(machine_line())
    print(f"1280x720 RGB frame, {args.threads} interpreter threads, medians of {args.rounds}")
    print()
    table: dict[str, dict[str, float]] = {}
    for name in args.models.split(","):
        for precision in ("int8", "fp32"):
            table[f"{name} {precision}"] = profile(
                ROOT / "models" / name, f"model-{precision}.tflite", frame, args.threads,
                args.rounds,
            )  # fmt: skip
    print("| step | " + " | ".join(table) + " |")
    print("| --- |" + " ---: |" * len(table))
    for step in (*COLUMNS, "classify - backend.run", "same, before"):
        print(f"| {step} | " + " | ".join(f"{r[step]:.3f} ms" for r in table.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
