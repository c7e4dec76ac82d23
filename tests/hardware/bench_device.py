"""The runtime against raw LiteRT, ONNX Runtime and MediaPipe on a real device, as one table.

Run on the Raspberry Pi or Jetson itself, from the repository root with the device extras
installed (``pip install '.[device]'``); it needs nothing else from the repository:

    python tests/hardware/bench_device.py                         # the bundled models
    python tests/hardware/bench_device.py --model my.tflite --threads 4
    python tests/hardware/bench_device.py --mediapipe-python ~/mp-venv/bin/python

Same file, same 1280x720 RGB frame, same threads, medians of interleaved rounds (each method once
per round), as ratios to the raw ``invoke()`` of the same process: raw invoke on a preresized
tensor, ``cv2.resize(INTER_AREA)`` + invoke, ``LoadedModel.classify`` (LiteRT and, for a bundle
with an ``.onnx``, ONNX Runtime), raw ONNX Runtime, and, when a Python with ``mediapipe`` is
given (``mediapipe`` brings its own OpenCV, so keep it in its own venv), MediaPipe's
``ImageClassifier`` with its own raw invoke. Then 1 vs N threads and the precision ``auto``
would choose. Prints a markdown table with the CPU model and its int8-relevant flags, ready to
paste into docs/benchmarks.md. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ("avx2", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm", "asimdhp")


def machine() -> str:
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            name, _, value = line.partition(":")
            fields.setdefault(name.strip().lower(), value.strip())
    except OSError:
        pass
    board = ""
    try:
        board = Path("/proc/device-tree/model").read_bytes().rstrip(b"\0").decode()
    except OSError:
        pass
    model = fields.get("model name") or fields.get("cpu part", "?")
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    marks = " ".join(f"{'+' if f in flags else '-'}{f}" for f in FLAGS)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"{board or platform.node()}: {model} ({platform.machine()}; {marks}); "
        f"{os.cpu_count()} cores; load {load}"
    )


def interleaved(methods: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    for _ in range(5):
        for run in methods.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, run in methods.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def compare(path: Path, artifact: str | None, frame: Any, threads: int, rounds: int) -> dict:
    import cv2
    import numpy as np

    from edge_runtime.backends import BackendOptions
    from edge_runtime.backends.litert import import_interpreter
    from edge_runtime.model import load_model

    tflite = path / artifact if artifact else path
    interpreter = import_interpreter().interpreter(model_path=str(tflite), num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    _, height, width, _ = (int(d) for d in detail["shape"])
    tensor = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)[None]
    tensor = tensor.astype(detail["dtype"])

    def raw() -> None:
        interpreter.set_tensor(detail["index"], tensor)
        interpreter.invoke()

    def resize_invoke() -> None:
        small = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)[None]
        interpreter.set_tensor(detail["index"], small.astype(detail["dtype"], copy=False))
        interpreter.invoke()

    options = BackendOptions(threads=threads)
    ours = load_model(path, artifact=artifact, options=options)
    methods: dict[str, Callable[[], object]] = {
        "raw invoke": raw,
        "cv2 resize + invoke": resize_invoke,
        "edge_runtime": lambda: ours.classify(frame),
    }
    onnx = path / "model-fp32.onnx" if artifact else None
    loaded = [ours]
    if onnx is not None and onnx.is_file():
        try:
            import onnxruntime as ort

            session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            as_float = tensor.astype(np.float32)
            methods["ORT raw (fp32)"] = lambda: session.run(None, {name: as_float})
            ort_model = load_model(path, artifact=onnx.name, options=options)
            loaded.append(ort_model)
            methods["edge_runtime ORT (fp32)"] = lambda: ort_model.classify(frame)
        except ImportError:
            pass
    result = interleaved(methods, rounds)
    for model in loaded:
        model.close()
    return result


def mediapipe(python: str, model: Path, frame_file: Path, threads: int, rounds: int) -> dict:
    side = ROOT / "benchmarks" / "mediapipe_side.py"
    command = [python, str(side), str(model), str(frame_file), "--threads", str(threads),
               "--rounds", str(rounds)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": done.stderr.strip()[-200:]}


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from edge_runtime.scenes import SceneStream

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a bundle or .tflite (default: bundled)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--mediapipe-python", help="a Python whose venv has mediapipe")
    args = parser.parse_args(argv)

    frame = np.ascontiguousarray(
        SceneStream("traffic-signs", seed=3, width=1280, height=720).frame(40)[0]
    )
    frame_file = Path(tempfile.mkdtemp()) / "frame.npy"
    np.save(frame_file, frame)
    if args.model is not None:
        cases = [(args.model.name, args.model, None)]
        if args.model.is_dir():
            cases = [(args.model.name, args.model, a) for a in ("model-int8.tflite",)]
    else:
        cases = [
            (f"{name} {precision}", ROOT / "models" / name, f"model-{precision}.tflite")
            for name in ("traffic-signs", "banknotes")
            for precision in ("int8", "fp32")
        ]
    print(f"{machine()}; {args.threads} threads, {args.rounds} interleaved rounds, 1280x720 frame")
    print()
    print("| model | method | median | x raw invoke |")
    print("| --- | --- | ---: | ---: |")
    for title, path, artifact in cases:
        figures = compare(path, artifact, frame, args.threads, args.rounds)
        if args.mediapipe_python:
            file = path / artifact if artifact else path
            theirs = mediapipe(args.mediapipe_python, file, frame_file, args.threads, args.rounds)
            if "ms" in theirs:
                scale = figures["raw invoke"] / theirs["ms"]["raw_invoke"]
                # MediaPipe's time in this process's raw-invoke units, so the ratio compares.
                figures["MediaPipe (normalized)"] = theirs["ms"]["mediapipe"] * scale
        raw = figures["raw invoke"]
        for method, ms in figures.items():
            print(f"| {title} | {method} | {ms:.3f} ms | {ms / raw:.2f}x |")
        scaling = {}
        for threads in sorted({1, args.threads}):
            scaling[threads] = compare(path, artifact, frame, threads, max(20, args.rounds // 4))
        one, many = scaling[1], scaling[max(scaling)]
        print(
            f"| {title} | 1 vs {max(scaling)} threads (edge_runtime) | "
            f"{one['edge_runtime']:.3f} / {many['edge_runtime']:.3f} ms | "
            f"{one['edge_runtime'] / many['edge_runtime']:.2f}x |"
        )
    if args.model is None or args.model.is_dir():
        from edge_runtime.backends import BackendOptions
        from edge_runtime.model import load_model

        bundle = args.model or ROOT / "models" / "traffic-signs"
        with load_model(
            bundle, precision="auto", options=BackendOptions(threads=args.threads),
            cache_dir=tempfile.mkdtemp(),
        ) as model:  # fmt: skip
            selection = model.info["selection"]
        timed = ", ".join(
            f"{row['artifact']} {row['median_ms']:.3f} ms"
            for row in selection["timings"]
            if row["median_ms"] is not None
        )
        print(f"\nprecision auto on this device chooses {selection['artifact']} ({timed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
