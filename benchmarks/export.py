"""Export benchmark: file size, latency and accuracy of every artifact format on this machine.

For two backbones, trains on a synthetic scenario, exports all six formats through
``edge-export export`` (which verifies each artifact through the device runtime), then times each
artifact again through the runtime with a fixed thread count:

* MobileNetV3-Small at 96x96, trained from scratch (``--weights none``) on rendered traffic signs;
* InceptionV3 at 299x299. No ImageNet weights can be downloaded here, so its backbone is a fixed
  random initialization (saved to a weights file and passed as ``--weights FILE``): the backbone is
  frozen and the head is trained on its features. Sizes and speed are those of the real network;
  accuracy is that of random features, so read it for float-vs-int8 agreement, not for quality.

Results are written as JSON and, with ``--write-docs``, as the ``## Export`` section of
docs/benchmarks.md (other sections are kept). Numbers are for ratios measured in one run: the
machine is shared and noisy.

    python benchmarks/export.py --work /tmp/export-bench --write-docs
    python benchmarks/export.py --quick          # a smoke run with tiny settings
    python benchmarks/export.py --from-json /tmp/export-bench/export-benchmark.json --write-docs
    python benchmarks/export.py --from-json /tmp/export-bench/export-benchmark.json --retime
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Export"


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    arch: str
    size: int
    per_class: int
    epochs: int
    random_frozen: bool
    runs: int
    learning_rate: float = 1e-3


CASES = {
    "mobilenet_v3_small": Case(
        "mobilenet_v3_small", "MobileNetV3-Small 96x96, trained from scratch",
        "mobilenet_v3_small", 96, 150, 20, False, 100, 3e-3,
    ),
    "inception_v3": Case(
        "inception_v3", "InceptionV3 299x299, random frozen backbone + trained head",
        "inception_v3", 299, 20, 30, True, 20,
    ),
}  # fmt: skip


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def dataset(work: Path, per_class: int, seed: int) -> Path:
    from exporter.dataset import synthesize_dataset

    data = work / f"signs-{per_class}"
    if not data.is_dir():
        _say(f"rendering {per_class} traffic-sign images per class into {data}")
        synthesize_dataset("traffic-signs", data, per_class=per_class, size=96, seed=seed)
    return data


def random_backbone_weights(work: Path, data: Path, arch: str, size: int, seed: int) -> Path:
    """A fixed random initialization of the backbone, saved as a Keras weights file.

    Batch-normalization statistics are then set from one batch of real images (a data-dependent
    initialization): with the initial statistics (mean 0, variance 1) the activations of a deep
    random network collapse and its features carry no signal for the head to learn from.
    """
    import keras
    import numpy as np

    from edge_runtime.preprocess import PreprocessSpec
    from exporter.backbones import WeightsChoice, backbone_info, build_backbone
    from exporter.dataset import load_images, scan_dataset
    from exporter.quantize import stratified_sample

    path = work / f"{arch}-{size}-random-bn-seed{seed}.weights.h5"
    if path.is_file():
        return path
    keras.utils.set_random_seed(seed)
    backbone = build_backbone(arch, (size, size), WeightsChoice("none"))
    scanned = scan_dataset(data)
    chosen = stratified_sample([(scanned.root / s.path, s.label) for s in scanned.samples], 48)
    pixels = load_images(chosen, PreprocessSpec(size, size)).astype(np.float32)
    if backbone_info(arch).normalization == "minus_one_to_one":
        pixels = pixels / 127.5 - 1.0  # the classifier puts this rescaling in front
    norms = [x for x in backbone.layers if isinstance(x, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0  # moving statistics := this batch's statistics
    backbone(pixels, training=True)
    backbone.save_weights(str(path))
    return path


def train_case(case: Case, work: Path, data: Path, seed: int) -> Path:
    from exporter.progress import Progress
    from exporter.train import TrainConfig, train

    run_dir = work / f"run-{case.key}"
    if (run_dir / "model.keras").is_file():
        _say(f"reusing {run_dir}")
        return run_dir
    weights = (
        str(random_backbone_weights(work, data, case.arch, case.size, seed))
        if case.random_frozen
        else "none"
    )
    start = time.perf_counter()
    train(
        TrainConfig(
            data=data,
            out=run_dir,
            arch=case.arch,
            weights=weights,
            input_size=(case.size, case.size),
            epochs=case.epochs,
            seed=seed,
            augment_variants=0 if case.random_frozen else 2,
            learning_rate=case.learning_rate,
            patience=0,
        ),
        progress=Progress(),
    )
    _say(f"trained {case.key} in {time.perf_counter() - start:.0f} s")
    return run_dir


def export_case(case: Case, work: Path, run_dir: Path, calibration: int) -> Any:
    from exporter.export.pipeline import ExportOptions, export_run
    from exporter.progress import Progress

    out = work / f"bundle-{case.key}"
    start = time.perf_counter()
    result = export_run(
        run_dir,
        ExportOptions(
            out=out,
            name=case.key.replace("_", "-"),
            version=1,
            calibration_images=calibration,
            allow_accuracy_drop=True,  # record the numbers even when the gate would refuse
            force=True,
        ),
        Progress(),
    )
    _say(f"exported {case.key} in {time.perf_counter() - start:.0f} s")
    return result


def time_artifacts(bundle: Path, files: list[str], threads: int, runs: int) -> dict[str, float]:
    """Median milliseconds of one inference per artifact, through the runtime (preparation
    excluded). The artifacts take turns, one inference each per round, so load from other
    processes on a shared machine slows them alike and the ratios hold."""
    import numpy as np

    from edge_runtime.backends import BackendOptions
    from edge_runtime.model import load_model

    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    models = {
        name: load_model(bundle, artifact=name, options=BackendOptions(threads=threads, warmup=3))
        for name in files
    }
    try:
        tensors = {name: np.array(m.prepare(frame), copy=True) for name, m in models.items()}
        times: dict[str, list[float]] = {name: [] for name in files}
        for _ in range(runs):
            for name, model in models.items():
                start = time.perf_counter()
                model.infer(tensors[name])
                times[name].append((time.perf_counter() - start) * 1000.0)
    finally:
        for model in models.values():
            model.close()
    return {name: statistics.median(values) for name, values in times.items()}


def run_case(case: Case, work: Path, threads: int, calibration: int, seed: int) -> dict[str, Any]:
    data = dataset(work, case.per_class, seed)
    run_dir = train_case(case, work, data, seed)
    result = export_case(case, work, run_dir, calibration)
    bundle = result.bundle.root
    artifacts = [dict(row) for row in result.rows()]
    _say(f"timing {len(artifacts)} artifacts ({threads} threads, {case.runs} rounds)")
    latency = time_artifacts(bundle, [row["file"] for row in artifacts], threads, case.runs)
    for row in artifacts:
        row["latency_ms_threads"] = latency[row["file"]]
    run = json.loads((run_dir / "run.json").read_text())
    return {
        "case": case.key,
        "title": case.title,
        "input_size": case.size,
        "weights": run.get("weights"),
        "training_mode": run.get("training_mode"),
        "images": run.get("images"),
        "held_out": {"split": result.held_out, "images": result.images},
        "float_accuracy": result.float_accuracy,
        "threads": threads,
        "bundle": str(bundle),
        "runs": case.runs,
        "artifacts": artifacts,
    }


def ratios(case: dict[str, Any]) -> dict[str, float]:
    by_key = {a["artifact"]: a for a in case["artifacts"]}
    out = {}
    for fmt in ("tflite", "onnx"):
        fp32, int8 = by_key.get(f"{fmt}-fp32"), by_key.get(f"{fmt}-int8")
        if fp32 and int8:
            out[f"{fmt}_int8_speedup"] = fp32["latency_ms_threads"] / int8["latency_ms_threads"]
            out[f"{fmt}_int8_size_ratio"] = fp32["bytes"] / int8["bytes"]
    fp32 = by_key.get("tflite-fp32")
    if fp32:
        for key, row in by_key.items():
            out[f"{key}_vs_tflite_fp32_speedup"] = (
                fp32["latency_ms_threads"] / row["latency_ms_threads"]
            )
    return out


def cpu_description() -> str:
    """CPU model and the instruction sets that decide int8 speed (dot products)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
    have = [f for f in wanted if f in flags]
    return f"{model} ({', '.join(have) or 'no AVX2/VNNI'}; {os.cpu_count()} cores)"


def load_average() -> str:
    try:
        return ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        SECTION,
        "",
        f"Measured by `python benchmarks/export.py --write-docs` on {results['machine']}, "
        f"{results['date']}. Each artifact was exported by `edge-export export`, verified through "
        "the runtime on the held-out split of a rendered traffic-sign dataset "
        f"(`edge-export dataset synth`), then timed through the runtime with "
        f"{results['threads']} thread(s) (median inference, preparation excluded; the artifacts "
        "take turns, one inference each per round). The machine is shared (load average "
        f"{results.get('load', 'unknown')} while timing): read the ratios, not the absolute "
        "milliseconds. int8 speed depends on the CPU's integer dot-product instructions "
        "(x86 VNNI/AMX, ARM dotprod): without them int8 gains little over fp32.",
        "",
    ]
    for case in results["cases"]:
        r = ratios(case)
        lines += [
            f"### {case['title']}",
            "",
            f"Weights: {case['weights']}; training: {case['training_mode']}; float top-1 "
            f"{case['float_accuracy']:.1%} on {case['held_out']['images']} held-out images.",
            "",
            "| artifact | size | top-1 | agreement with float | max score diff | latency |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for a in case["artifacts"]:
            lines.append(
                f"| {a['artifact']} | {a['bytes'] / 1e6:.2f} MB | {a['accuracy']:.1%} | "
                f"{a['agreement_with_float']:.1%} | {a['max_abs_diff']:.1e} | "
                f"{a['latency_ms_threads']:.2f} ms |"
            )
        float_acc = case["float_accuracy"]
        int8 = {a["artifact"]: a for a in case["artifacts"]}
        drops = ", ".join(
            f"{k} {(float_acc - int8[k]['accuracy']) * 100:+.1f}".replace("+-", "-")
            for k in ("tflite-int8", "onnx-int8")
            if k in int8
        )
        speed = (r.get("tflite_int8_speedup", 0), r.get("onnx_int8_speedup", 0))
        size = (r.get("tflite_int8_size_ratio", 0), r.get("onnx_int8_size_ratio", 0))
        lines += [
            "",
            f"int8 speed-up over fp32 of the same format: TFLite {speed[0]:.2f}x, ONNX "
            f"{speed[1]:.2f}x (target: at least 2x for TFLite); fp32/int8 size: TFLite "
            f"{size[0]:.2f}x, ONNX {size[1]:.2f}x. Top-1 points lost by int8 against float: "
            f"{drops} (target: at most 1.0).",
            "",
            f"Targets on this machine: int8 within 1.0 point of float: "
            f"{_verdict(float_acc, int8, case['held_out']['images'])}; TFLite int8 at least 2x "
            f"faster than TFLite fp32: {'met' if speed[0] >= 2 else 'not met'}.",
            "",
        ]
    if results.get("notes"):
        for note in results["notes"]:
            lines += [note, ""]
    return "\n".join(lines).rstrip() + "\n"


def _verdict(float_acc: float, rows: dict[str, Any], images: int) -> str:
    parts = []
    for key in ("tflite-int8", "onnx-int8"):
        if key in rows:
            lost = (float_acc - rows[key]["accuracy"]) * 100
            changed = round(abs(lost) * images / 100)
            state = "met" if lost <= 1.0 + 1e-9 else "not met"
            parts.append(f"{key} {state} (net {changed} of {images} images)")
    return ", ".join(parts)


def write_docs(section: str, path: Path = DOCS) -> None:
    """Put ``section`` in place of an existing ``## Export`` section, or append it."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + section + ("\n" + tail if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/edge-export-bench"))
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--calibration-images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument(
        "--from-json", type=Path, metavar="FILE", help="only render results saved by a run"
    )
    parser.add_argument(
        "--retime", action="store_true", help="with --from-json: time its bundles again"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        if args.retime:
            for case in results["cases"]:
                files = [row["file"] for row in case["artifacts"]]
                _say(f"timing {case['case']} again ({args.threads} threads, {case['runs']} rounds)")
                latency = time_artifacts(Path(case["bundle"]), files, args.threads, case["runs"])
                for row in case["artifacts"]:
                    row["latency_ms_threads"] = latency[row["file"]]
            results["threads"] = args.threads
            results["date"] = time.strftime("%Y-%m-%d")
            results["machine"] = f"{cpu_description()}, Python {platform.python_version()}"
            results["load"] = load_average()
            args.from_json.write_text(json.dumps(results, indent=2, default=str))
        section = markdown(results)
        print(section)
        if args.write_docs:
            write_docs(section)
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    cases = []
    for key in args.cases.split(","):
        case = CASES[key.strip()]
        if args.quick:
            case = Case(case.key, case.title, case.arch, case.size if case.size < 100 else 75,
                        10, 1, case.random_frozen, 5)  # fmt: skip
        cases.append(run_case(case, args.work, args.threads, args.calibration_images, args.seed))
    results = {
        "machine": f"{cpu_description()}, Python {platform.python_version()}",
        "load": load_average(),
        "date": time.strftime("%Y-%m-%d"),
        "threads": args.threads,
        "cases": cases,
        "notes": [
            "InceptionV3's backbone is a fixed random initialization (no ImageNet download on "
            "this machine) whose batch-normalization statistics were set from 48 training "
            "images, frozen, with a trained head: its sizes and speeds are those of the real "
            "network, its accuracy is that of random convolutional features.",
        ],
    }
    out = args.work / "export-benchmark.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    section = markdown(results)
    print(section)
    if args.write_docs and not args.quick:
        write_docs(section)
        _say(f"updated {DOCS}")
    _say(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
