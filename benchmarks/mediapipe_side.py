"""The MediaPipe side of benchmarks/compare.py, run in its own virtual environment.

``mediapipe`` from PyPI depends on opencv-contrib-python, a second ``cv2`` that replaces the
runtime's opencv-python-headless, so it lives in a benchmark-only venv (``make bench-venv``) and
runs in a subprocess. It gets the same model file, the same frame (a ``.npy`` file) and the same
thread count, and measures, interleaved round by round:

- ``raw_invoke``: the plain LiteRT interpreter of that venv (``set_tensor`` + ``invoke`` on a
  preresized tensor), so ratios to raw invoke are comparable between the two processes;
- ``mediapipe``: ``ImageClassifier.classify`` of an ``mp.Image`` of the frame (its own resize
  and postprocessing included; the ``mp.Image`` is made once, as a camera loop would);
- ``mediapipe_with_image``: the same including making the ``mp.Image`` from the numpy frame.

MediaPipe Tasks has no thread setting in Python: its CPU inference uses XNNPACK with its own
default thread count, noted in the output. Prints one JSON object.

    .venv-bench/bin/python benchmarks/mediapipe_side.py MODEL FRAME.npy --threads 2 --rounds 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("frame")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)

    os.environ.setdefault("GLOG_minloglevel", "2")
    import cv2
    import mediapipe as mp
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from mediapipe.tasks import python as tasks
    from mediapipe.tasks.python import vision

    frame = np.load(args.frame)
    interpreter = Interpreter(model_path=args.model, num_threads=args.threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    _, height, width, _ = detail["shape"]
    tensor = cv2.resize(frame, (int(width), int(height)), interpolation=cv2.INTER_AREA)[None]
    if detail["dtype"] != np.uint8:
        tensor = tensor.astype(detail["dtype"])
    classifier = vision.ImageClassifier.create_from_options(
        vision.ImageClassifierOptions(
            base_options=tasks.BaseOptions(model_asset_path=args.model), max_results=5
        )
    )
    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=frame)

    def raw() -> None:
        interpreter.set_tensor(detail["index"], tensor)
        interpreter.invoke()

    def pipe() -> None:
        classifier.classify(image)

    def pipe_with_image() -> None:
        classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=frame))

    methods = {"raw_invoke": raw, "mediapipe": pipe, "mediapipe_with_image": pipe_with_image}
    for _ in range(args.warmup):
        for run in methods.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, run in methods.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    top = classifier.classify(image).classifications[0].categories[0]
    print(
        json.dumps(
            {
                "ms": {name: statistics.median(values) for name, values in times.items()},
                "mediapipe": mp.__version__,
                "threads_raw_invoke": args.threads,
                "mediapipe_threads": "MediaPipe's default (no Python setting)",
                "top1": [top.index, top.category_name, round(float(top.score), 4)],
                "cv2": cv2.__version__,
            }
        )
    )
    classifier.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
