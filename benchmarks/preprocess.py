"""The runtime's area downscaling against OpenCV's INTER_AREA: time, pixels, labels.

For camera-sized frames (rendered scenes and a real photo), in one process, interleaved:

- time of ``edge_runtime.preprocess.prepare`` (the separable area path, or the integral image,
  where they apply; the ``path`` column) against ``cv2.resize(INTER_AREA)`` for common model
  input sizes;
- the exact pixel difference between the two: largest difference, share of values that differ,
  and whether every difference is at an exact tie (a box mean of x.5 that the two round apart);
- the bundled models' answers on 1280x720 rendered frames fed both ways: how many top-1 labels
  differ, and top-1 accuracy either way.

    python benchmarks/preprocess.py
    python benchmarks/preprocess.py --frames 300
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_line  # noqa: E402

SOURCES = ((1280, 720), (640, 480), (1920, 1080))
SIZES = (96, 128, 160, 224)


def exact_means(image, height, width):  # type: ignore[no-untyped-def]
    import numpy as np

    def weights(source: int, output: int) -> np.ndarray:
        edges = np.arange(output + 1) * (source / output)
        pixels = np.arange(source)
        overlap = np.minimum(edges[1:, None], pixels + 1) - np.maximum(edges[:-1, None], pixels)
        return np.clip(overlap, 0, None) / (source / output)

    rows = np.tensordot(weights(image.shape[0], height), image.astype(np.float64), axes=(1, 0))
    return np.tensordot(rows, weights(image.shape[1], width), axes=(1, 1)).transpose(0, 2, 1)


def main(argv: list[str] | None = None) -> int:
    import cv2
    import numpy as np

    from edge_runtime.backends import BackendOptions
    from edge_runtime.imageio import read_image
    from edge_runtime.model import load_model
    from edge_runtime.preprocess import PreprocessSpec, prepare
    from edge_runtime.preprocess.area import plan_for
    from edge_runtime.preprocess.separable import separable_plan
    from edge_runtime.scenes import SceneStream

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200, help="frames per bundled model")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    scenes = [
        SceneStream(name, seed=3, width=1920, height=1080).frame(i * 13)[0]
        for name in ("traffic-signs", "banknotes")
        for i in range(3)
    ]
    parrot = ROOT.parent / "shared" / "testdata" / "imagenet" / "parrot.jpg"
    print(machine_line())
    print()
    print("| source | model input | path | prepare | cv2 INTER_AREA | ratio | max diff | values "
          "that differ | all at ties |")  # fmt: skip
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for width, height in SOURCES:
        frames = [cv2.resize(s, (width, height), interpolation=cv2.INTER_AREA) for s in scenes]
        if parrot.is_file():
            photo = read_image(parrot)
            frames.append(cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA))
        for size in SIZES:
            spec = PreprocessSpec(size, size)
            out = np.empty((size, size, 3), np.uint8)
            times: dict[str, list[float]] = {"ours": [], "cv2": []}
            for _ in range(args.rounds):
                start = time.perf_counter()
                prepare(frames[0], spec, out=out)
                times["ours"].append(time.perf_counter() - start)
                start = time.perf_counter()
                cv2.resize(frames[0], (size, size), dst=out, interpolation=cv2.INTER_AREA)
                times["cv2"].append(time.perf_counter() - start)
            diffs, tied = [], True
            for frame in frames:
                ours = prepare(frame, spec).astype(int)
                theirs = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA).astype(int)
                difference = np.abs(ours - theirs)
                diffs.append(difference)
                if difference.any():
                    exact = exact_means(frame, size, size)
                    ties = np.isclose(exact - np.floor(exact), 0.5, atol=1e-3)
                    tied &= bool(np.all(ties[difference > 0]))
            stacked = np.stack(diffs)
            ours_ms = statistics.median(times["ours"]) * 1e3
            cv2_ms = statistics.median(times["cv2"]) * 1e3
            if separable_plan(height, width, size, size) is not None:
                path = "separable"
            elif plan_for(height, width, size, size) is not None:
                path = "integral"
            else:
                path = "cv2"
            print(
                f"| {width}x{height} | {size}x{size} | {path} | {ours_ms:.3f} ms | {cv2_ms:.3f} ms "
                f"| {ours_ms / cv2_ms:.2f}x | {stacked.max()} | {np.mean(stacked > 0) * 100:.3f}% "
                f"| {'yes' if tied else 'no'} |"
            )

    print()
    print("Bundled models on rendered 1280x720 frames, preprocessed both ways:")
    print()
    print("| bundle | artifact | frames | top-1 labels that differ | top-1 (runtime) | top-1 "
          "(cv2 INTER_AREA) |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name in ("traffic-signs", "banknotes"):
        bundle = ROOT / "models" / name
        stream = SceneStream(name, seed=20261201, width=1280, height=720)
        frames = []
        for index in range(args.frames * 4):
            image, truth, _ = stream.frame(index * 5)
            if truth is not None:
                frames.append((image, truth))
            if len(frames) == args.frames:
                break
        for artifact in ("model-int8.tflite", "model-fp32.tflite"):
            model = load_model(bundle, artifact=artifact, options=BackendOptions(threads=2))
            spec = model.preprocess_spec
            differ = right_ours = right_cv2 = 0
            for image, truth in frames:
                ours = model.labels[int(np.argmax(model.infer(model.prepare(image))))]
                plain = cv2.resize(image, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
                # Already at the input size, prepare only copies (and casts for a float model).
                theirs = model.labels[int(np.argmax(model.infer(model.prepare(plain))))]
                differ += ours != theirs
                right_ours += ours == truth
                right_cv2 += theirs == truth
            model.close()
            count = len(frames)
            print(
                f"| {name} | {artifact} | {count} | {differ} | {right_ours / count * 100:.1f}% | "
                f"{right_cv2 / count * 100:.1f}% |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
