"""Why ONNX Runtime int8 gains little over fp32, and which quantization settings pay here.

One fp32 ONNX model (default: the InceptionV3 299 of ``benchmarks/models.py``) is quantized
statically with ``onnxruntime.quantization`` in several ways, and every variant is timed in one
process against the fp32 model, interleaved (one run each per round), with the session settings
the runtime uses and with spinning threads allowed. For each variant the optimized graph ONNX
Runtime actually runs is inspected: how many convolutions became integer kernels (QLinearConv,
fused from DequantizeLinear -> Conv -> QuantizeLinear) and how many Q/DQ nodes are left over
(each a float<->int8 conversion of a whole tensor).

Variants (``quantize_static``, MinMax calibration on rendered scenes):

- ``s8s8-qdq-pc``: int8 activations and weights, QDQ, per-channel (what ``edge-export`` made);
- ``u8s8-qdq-pc``: uint8 activations, int8 weights, per-channel;
- ``u8s8-qdq-pc-rr``: the same with ``reduce_range`` (7-bit weights), which keeps AVX2's
  ``vpmaddubsw`` from saturating on CPUs without VNNI;
- ``u8s8-qdq-pt``: per-tensor weights;
- ``u8s8-qop-pc``: QOperator format (QLinearConv nodes written directly).

    python benchmarks/onnx_int8.py --work build/bench-models
    python benchmarks/onnx_int8.py --model some.onnx --size 224 --rounds 30 --json
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_line  # noqa: E402


def _variant(act: str, per_channel: bool, reduce_range: bool, fmt: str) -> dict[str, Any]:
    return {"act": act, "weight": "QInt8", "per_channel": per_channel, "rr": reduce_range,
            "fmt": fmt}  # fmt: skip


VARIANTS = {
    "s8s8-qdq-pc": _variant("QInt8", True, False, "QDQ"),
    "u8s8-qdq-pc": _variant("QUInt8", True, False, "QDQ"),
    "u8s8-qdq-pc-rr": _variant("QUInt8", True, True, "QDQ"),
    "u8s8-qdq-pt": _variant("QUInt8", False, False, "QDQ"),
    "u8s8-qop-pc": _variant("QUInt8", True, False, "QOperator"),
}


def quantize(fp32: Path, dest: Path, variant: dict[str, Any], calibration: Any) -> Path:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if dest.is_file():
        return dest
    prepared = dest.with_suffix(".pre.onnx")
    if not prepared.is_file():
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: image[None].astype("float32")} for image in calibration])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.items, None)

    quantize_static(
        str(prepared),
        str(dest),
        Reader(),
        quant_format=getattr(QuantFormat, variant["fmt"]),
        per_channel=variant["per_channel"],
        reduce_range=variant["rr"],
        activation_type=getattr(QuantType, variant["act"]),
        weight_type=getattr(QuantType, variant["weight"]),
        calibrate_method=CalibrationMethod.MinMax,
    )
    return dest


def session(path: Path, threads: int, spinning: bool, optimized: Path | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    spin = "1" if spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def op_counts(optimized: Path) -> dict[str, int]:
    import onnx

    graph = onnx.load(str(optimized), load_external_data=False).graph
    return dict(collections.Counter(node.op_type for node in graph.node))


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from benchmarks.models import build, calibration_images

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("build/bench-models"))
    parser.add_argument("--model", type=Path, help="an fp32 ONNX model (default: InceptionV3)")
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    fp32 = args.model or build("inception_v3", args.work, ("onnx-fp32",))["onnx-fp32"]
    folder = args.work / "onnx-int8-variants" / fp32.stem
    folder.mkdir(parents=True, exist_ok=True)
    calibration = calibration_images(args.size, count=16)
    files = {"fp32": fp32}
    for key in args.variants.split(","):
        files[key] = quantize(fp32, folder / f"{key}.onnx", VARIANTS[key], calibration)

    tensor = calibration[:1].astype(np.float32)
    sessions, graphs = {}, {}
    for key, path in files.items():
        for spinning in (False, True):
            optimized = folder / f"{key}.optimized.onnx" if not spinning else None
            sessions[(key, spinning)] = session(path, args.threads, spinning, optimized)
        graphs[key] = op_counts(folder / f"{key}.optimized.onnx")
    name = sessions[("fp32", False)].get_inputs()[0].name
    reference = sessions[("fp32", False)].run(None, {name: tensor})[0]
    times: dict[tuple[str, bool], list[float]] = {k: [] for k in sessions}
    for _ in range(args.rounds):
        for key, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, {name: tensor})
            times[key].append((time.perf_counter() - start) * 1e3)
    rows = []
    for key in files:
        graph = graphs[key]
        out = sessions[(key, False)].run(None, {name: tensor})[0]
        no_spin = statistics.median(times[(key, False)])
        spin = statistics.median(times[(key, True)])
        rows.append(
            {
                "variant": key,
                "mb": round(files[key].stat().st_size / 1e6, 2),
                "ms_no_spin": round(no_spin, 2),
                "ms_spin": round(spin, 2),
                "fp32_over_int8_no_spin": round(
                    statistics.median(times[("fp32", False)]) / no_spin, 2
                ),
                "fp32_over_int8_spin": round(statistics.median(times[("fp32", True)]) / spin, 2),
                "qlinear_conv": graph.get("QLinearConv", 0),
                "float_conv": graph.get("Conv", 0) + graph.get("FusedConv", 0),
                "quantize_linear": graph.get("QuantizeLinear", 0),
                "dequantize_linear": graph.get("DequantizeLinear", 0),
                "max_abs_score_diff": float(np.abs(out - reference).max()),
            }
        )
    result = {"machine": machine_line(), "threads": args.threads, "rounds": args.rounds,
              "model": str(fp32), "rows": rows}  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(result["machine"])
    print(f"{fp32.name}, {args.threads} threads, median of {args.rounds} interleaved rounds")
    print(
        "| variant | MB | ms (no spinning) | ms (spinning) | fp32/int8 (no spin) | fp32/int8 "
        "(spin) | QLinearConv | float Conv | QuantizeLinear | DequantizeLinear | max score diff |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['variant']} | {r['mb']} | {r['ms_no_spin']} | {r['ms_spin']} | "
            f"{r['fp32_over_int8_no_spin']}x | {r['fp32_over_int8_spin']}x | {r['qlinear_conv']} |"
            f" {r['float_conv']} | {r['quantize_linear']} | {r['dequantize_linear']} | "
            f"{r['max_abs_score_diff']:.3g} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
