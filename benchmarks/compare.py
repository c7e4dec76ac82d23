"""The runtime against raw LiteRT, ONNX Runtime and MediaPipe: same file, same frame, one run.

Per model file, in one process, interleaved (each method once per round, medians), all on the
same 1280x720 RGB frame and the same thread count, as ratios to the raw ``invoke()`` of that
process:

- ``raw invoke``: the plain LiteRT interpreter on a preresized tensor (``set_tensor`` + ``invoke``);
- ``raw resize+invoke``: ``cv2.resize(INTER_AREA)`` of the frame, then the same;
- ``edge_runtime``: ``LoadedModel.classify(frame)`` (preprocessing, inference, decoding, top-5);
- ``ORT raw`` / ``edge_runtime ORT``: ONNX Runtime on the preresized tensor, and ``classify``
  through the runtime's ONNX backend, for models with an ONNX file;
- ``MediaPipe``: ``ImageClassifier.classify`` in the benchmark venv (a subprocess fed the same
  file and the same frame as ``.npy``; see ``benchmarks/mediapipe_side.py``), with its own raw
  invoke measured there, so "vs MediaPipe" compares each to its own process's raw invoke and the
  milliseconds directly.

Then, for the default model: thread scaling (1 vs 2 threads), ``edge-runtime run`` over 120
images against a minimal 10-line LiteRT script (wall time, decode included; and the per-frame
work with decoding excluded), the first result of ``edge-runtime classify`` from process start
(cold start, with the auto-precision cache warm and cold), ``import edge_runtime``, and the peak
resident memory of a running ``edge-runtime run``. Every table is printed with the machine line
(CPU model, VNNI/AMX/dotprod flags, load average).

    make bench-venv                                   # MediaPipe's own venv (optional)
    python benchmarks/compare.py                      # bundled models
    python benchmarks/compare.py --models all         # + MobileNetV2 224 uint8, InceptionV3 299
    python benchmarks/compare.py --json build/compare.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import load_average, machine_line  # noqa: E402

BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
RUNTIME = Path(sys.executable).parent / "edge-runtime"


@dataclass(frozen=True)
class Subject:
    """One model file to compare, with its bundle (for the runtime) and an ONNX twin."""

    title: str
    tflite: Path
    bundle: Path | None = None
    onnx: Path | None = None
    onnx_title: str = ""


def subjects(names: list[str], work: Path) -> list[Subject]:
    chosen: list[Subject] = []
    for name in names:
        if name in ("traffic-signs", "banknotes"):
            bundle = ROOT / "models" / name
            for precision in ("int8", "fp32"):
                chosen.append(
                    Subject(
                        f"bundled {name} {precision} 96x96",
                        bundle / f"model-{precision}.tflite",
                        bundle,
                        bundle / "model-fp32.onnx",
                        "fp32",
                    )
                )
        elif name in ("mobilenet_v2", "inception_v3"):
            from benchmarks.models import SPECS, build

            keys = ("tflite-int8", "tflite-fp32", "onnx-fp32", "onnx-int8")
            files = build(name, work, keys)
            size = SPECS[name]
            label = {"mobilenet_v2": "MobileNetV2", "inception_v3": "InceptionV3"}[name]
            if name == "mobilenet_v2":
                chosen.append(
                    Subject(f"{label} {size} uint8 (random weights)", files["tflite-int8"],
                            onnx=files["onnx-int8"], onnx_title="int8 QDQ")
                )  # fmt: skip
            else:
                for precision in ("fp32", "int8"):
                    chosen.append(
                        Subject(f"{label} {size} {precision} (random weights)",
                                files[f"tflite-{precision}"], onnx=files[f"onnx-{precision}"],
                                onnx_title=precision)
                    )  # fmt: skip
        else:
            raise SystemExit(f"unknown model {name!r}")
    return chosen


def interleaved(methods: dict[str, Callable[[], object]], rounds: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        for run in methods.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, run in methods.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def in_process(subject: Subject, frame: Any, threads: int, rounds: int) -> dict[str, float]:
    import cv2
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from edge_runtime.backends import BackendOptions
    from edge_runtime.model import load_model

    options = BackendOptions(threads=threads)
    interpreter = Interpreter(model_path=str(subject.tflite), num_threads=threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    _, height, width, _ = (int(d) for d in detail["shape"])
    tensor = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)[None]
    tensor = tensor.astype(detail["dtype"])
    resized = np.empty((height, width, 3), np.uint8)

    def raw() -> None:
        interpreter.set_tensor(detail["index"], tensor)
        interpreter.invoke()

    def resize_invoke() -> None:
        cv2.resize(frame, (width, height), dst=resized, interpolation=cv2.INTER_AREA)
        interpreter.set_tensor(detail["index"], resized[None].astype(detail["dtype"], copy=False))
        interpreter.invoke()

    if subject.bundle is not None:
        ours = load_model(subject.bundle, artifact=subject.tflite.name, options=options)
    else:
        ours = load_model(subject.tflite, options=options)
    methods: dict[str, Callable[[], object]] = {
        "raw invoke": raw,
        "raw resize+invoke": resize_invoke,
        "edge_runtime": lambda: ours.classify(frame),
    }
    ort_model = None
    if subject.onnx is not None and subject.onnx.is_file():
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = threads
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session_options.log_severity_level = 3
        session = ort.InferenceSession(
            str(subject.onnx), sess_options=session_options, providers=["CPUExecutionProvider"]
        )
        name = session.get_inputs()[0].name
        ort_tensor = tensor.astype(np.float32)
        methods["ORT raw"] = lambda: session.run(None, {name: ort_tensor})
        if subject.bundle is not None:
            ort_model = load_model(subject.bundle, artifact=subject.onnx.name, options=options)
        else:
            ort_model = load_model(subject.onnx, options=options)
        methods["edge_runtime ORT"] = lambda: ort_model.classify(frame)
    per_round = sum(
        _once(run) for run in methods.values()
    )  # a first pass tells how long a round takes
    rounds = max(15, min(rounds, int(60.0 / max(per_round, 1e-6))))
    result = interleaved(methods, rounds)
    result["rounds"] = rounds
    ours.close()
    if ort_model is not None:
        ort_model.close()
    return result


def _once(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def mediapipe(subject: Subject, frame_file: Path, threads: int, rounds: int) -> dict | None:
    if not BENCH_PYTHON.is_file():
        return None
    command = [
        str(BENCH_PYTHON), str(ROOT / "benchmarks" / "mediapipe_side.py"), str(subject.tflite),
        str(frame_file), "--threads", str(threads), "--rounds", str(rounds),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:200]}
    return json.loads(lines[-1])


def thread_scaling(subject: Subject, frame: Any, rounds: int) -> dict[str, float]:
    from ai_edge_litert.interpreter import Interpreter

    from edge_runtime.backends import BackendOptions
    from edge_runtime.model import load_model

    methods: dict[str, Callable[[], object]] = {}
    keep = []
    for threads in (1, 2):
        interpreter = Interpreter(model_path=str(subject.tflite), num_threads=threads)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        tensor = __import__("numpy").zeros(detail["shape"], detail["dtype"])

        def raw(i: Any = interpreter, d: Any = detail, t: Any = tensor) -> None:
            i.set_tensor(d["index"], t)
            i.invoke()

        model = load_model(
            subject.bundle or subject.tflite,
            artifact=subject.tflite.name if subject.bundle else None,
            options=BackendOptions(threads=threads),
        )
        keep.append(model)
        methods[f"raw invoke, {threads} thread(s)"] = raw
        methods[f"edge_runtime, {threads} thread(s)"] = lambda m=model: m.classify(frame)
    result = interleaved(methods, rounds)
    for model in keep:
        model.close()
    return result


# -- whole processes ---------------------------------------------------------------------------
MINIMAL_SCRIPT = '''\
import sys, glob, cv2, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[3])); it.allocate_tensors()
i, o = it.get_input_details()[0], it.get_output_details()[0]
h, w = (int(x) for x in i["shape"][1:3])
for path in sorted(glob.glob(sys.argv[2] + "/*.png")):
    rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    it.set_tensor(i["index"], cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)[None])
    it.invoke()
    print(path, int(np.argmax(it.get_tensor(o["index"])[0])), flush=True)
'''


def wall(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(seconds to exit, seconds to the first line of output, that line)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert process.stdout is not None
    first_line = process.stdout.readline()
    first = time.perf_counter() - start
    process.communicate()
    return time.perf_counter() - start, first, first_line.strip()


def whole_process(threads: int, repeats: int, work: Path) -> dict[str, Any]:
    import cv2

    from edge_runtime.scenes import SceneStream

    images = work / "images-120"
    if not images.is_dir():
        images.mkdir(parents=True)
        stream = SceneStream("traffic-signs", seed=11, width=640, height=480)
        for index in range(120):
            rgb = stream.frame(index * 3)[0]
            cv2.imwrite(str(images / f"{index:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    script = work / "minimal_litert.py"
    script.write_text(MINIMAL_SCRIPT)
    model = ROOT / "models" / "traffic-signs"
    artifact = "model-int8.tflite"
    cache = Path(tempfile.mkdtemp(prefix="compare-cache-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    run_cmd = [
        str(RUNTIME), "run", "--model", str(model), "--artifact", artifact, "--source",
        str(images), "--output", "jsonl", "--threads", str(threads),
    ]  # fmt: skip
    minimal_cmd = [sys.executable, str(script), str(model / artifact), str(images), str(threads)]
    classify = [
        str(RUNTIME), "classify", str(images / "000.png"), "--model", str(model),
        "--threads", str(threads),
    ]  # fmt: skip
    minimal_first = [sys.executable, str(script), str(model / artifact), str(images), str(threads)]
    times: dict[str, list[float]] = {
        "edge-runtime run, 120 images": [], "minimal LiteRT script, 120 images": [],
        "edge-runtime classify, first result (cache warm)": [],
        "minimal LiteRT script, first result": [],
    }  # fmt: skip
    wall(classify, env)  # fills the auto-precision cache
    cold_cache = []
    for _ in range(repeats):
        times["edge-runtime run, 120 images"].append(wall(run_cmd, env)[0])
        times["minimal LiteRT script, 120 images"].append(wall(minimal_cmd)[0])
        times["edge-runtime classify, first result (cache warm)"].append(wall(classify, env)[1])
        times["minimal LiteRT script, first result"].append(wall(minimal_first)[1])
        fresh = {**os.environ, "XDG_CACHE_HOME": tempfile.mkdtemp(prefix="compare-cold-")}
        cold_cache.append(wall(classify, fresh)[1])
    result = {name: statistics.median(values) for name, values in times.items()}
    result["edge-runtime classify, first result (cache cold: times 3 artifacts)"] = (
        statistics.median(cold_cache)
    )
    # The per-frame work with decoding excluded: the pipeline's own stage latencies.
    done = subprocess.run(run_cmd, capture_output=True, text=True, env=env)
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    stages = ("preprocess", "inference", "postprocess")
    result["edge-runtime run, per frame excluding decode (ms)"] = statistics.median(
        sum(r["latency_ms"].get(s, 0.0) for s in stages) for r in records
    )
    result["images"] = len(records)
    return result


def import_time(repeats: int) -> dict[str, float]:
    python = sys.executable
    bare = [wall([python, "-c", "print(1)"])[0] for _ in range(repeats)]
    ours = [wall([python, "-c", "import edge_runtime; print(1)"])[0] for _ in range(repeats)]
    done = subprocess.run(
        [python, "-X", "importtime", "-c", "import edge_runtime"], capture_output=True, text=True
    )
    total = 0
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() == "edge_runtime":
            total = int(parts[1])
    return {
        "python -c 'import edge_runtime' (s)": statistics.median(ours),
        "python -c pass (s)": statistics.median(bare),
        "import edge_runtime, -X importtime cumulative (s)": total / 1e6,
    }


def resident_memory(seconds: float = 8.0) -> dict[str, float]:
    """Peak VmRSS of the default pipeline: the bundled model on a 30 fps synthetic camera."""
    command = [
        str(RUNTIME), "run", "--model", str(ROOT / "models" / "traffic-signs"), "--source",
        "synthetic:traffic-signs?fps=30", "--output", "none", "--max-frames", "100000",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak, deadline = 0.0, time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
            except OSError:
                break
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(10)
    return {"edge-runtime run (default model, 30 fps camera), peak RSS MB": peak}


def print_table(title: str, rows: list[list[str]], header: list[str]) -> None:
    print(f"\n### {title}\n")
    print(f"{machine_line()}\n")
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from edge_runtime.scenes import SceneStream

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="traffic-signs,banknotes",
                        help="comma-separated, or 'all' (adds mobilenet_v2, inception_v3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "bench-models")
    parser.add_argument("--skip-processes", action="store_true",
                        help="only the per-frame comparison")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)  # fmt: skip
    names = args.models.split(",")
    if names == ["all"]:
        names = ["traffic-signs", "banknotes", "mobilenet_v2", "inception_v3"]
    args.work.mkdir(parents=True, exist_ok=True)
    frame = SceneStream("traffic-signs", seed=3, width=1280, height=720).frame(40)[0]
    frame = np.ascontiguousarray(frame)
    frame_file = args.work / "frame-1280x720.npy"
    np.save(frame_file, frame)
    report: dict[str, Any] = {"machine": machine_line(), "threads": args.threads, "rows": []}

    rows = []
    for subject in subjects(names, args.work):
        print(f"[compare] {subject.title} (load {load_average()})", file=sys.stderr, flush=True)
        ours = in_process(subject, frame, args.threads, args.rounds)
        theirs = mediapipe(subject, frame_file, args.threads, ours["rounds"])
        report["rows"].append({"model": subject.title, "ours": ours, "mediapipe": theirs})
        raw = ours["raw invoke"]
        cells = [subject.title, f"{raw:.3f} ms"]
        for key in ("raw resize+invoke", "edge_runtime"):
            cells.append(f"{ours[key]:.3f} ms ({ours[key] / raw:.2f}x)")
        if theirs and "ms" in theirs:
            mp_raw, mp = theirs["ms"]["raw_invoke"], theirs["ms"]["mediapipe"]
            cells.append(f"{mp:.3f} ms ({mp / mp_raw:.2f}x of its {mp_raw:.3f})")
            normalized = (ours["edge_runtime"] / raw) / (mp / mp_raw)
            cells.append(f"{ours['edge_runtime'] / mp:.2f}x / {normalized:.2f}x")
        else:
            cells += [theirs.get("error", "not installed") if theirs else "not installed", "-"]
        if "ORT raw" in ours:
            ort_raw = ours["ORT raw"]
            cells.append(f"{subject.onnx_title}: {ort_raw:.3f} ms ({ort_raw / raw:.2f}x)")
            ort_ours = ours["edge_runtime ORT"]
            cells.append(f"{ort_ours:.3f} ms ({ort_ours / raw:.2f}x)")
        else:
            cells += ["-", "-"]
        cells.append(str(ours["rounds"]))
        rows.append(cells)
    title = f"Per frame from a 1280x720 RGB frame, {args.threads} threads, interleaved medians"
    header = [
        "model", "raw invoke", "cv2 resize + invoke", "edge_runtime classify",
        "MediaPipe classify", "edge_runtime / MediaPipe (ms / normalized)", "ORT raw",
        "edge_runtime ORT", "rounds",
    ]  # fmt: skip
    print_table(title, rows, header)

    if not args.skip_processes:
        default = subjects(["traffic-signs"], args.work)[0]
        scaling = thread_scaling(default, frame, min(args.rounds, 200))
        report["thread_scaling"] = scaling
        print_table(
            f"Thread scaling, {default.title}",
            [[name, f"{ms:.3f} ms"] for name, ms in scaling.items()],
            ["method", "median"],
        )
        processes = whole_process(args.threads, 5, args.work)
        processes.update(import_time(7))
        processes.update(resident_memory())
        report["processes"] = processes
        print_table(
            "Whole processes (bundled traffic-signs int8; medians of 5-7 runs)",
            [[name, f"{value:.3f}"] for name, value in processes.items()],
            ["what", "seconds / MB / ms"],
        )
        ratio = processes["edge-runtime run, 120 images"] / processes[
            "minimal LiteRT script, 120 images"
        ]
        print(f"\nedge-runtime run / minimal script (120 images, wall): {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
