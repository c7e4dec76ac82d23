"""Self-check of a real camera: run on the device with the camera attached.

    python tests/hardware/check_camera.py camera:0 --seconds 10 --min-fps 10
    python tests/hardware/check_camera.py picamera2:0 --option width=640 --expect-color red
    python tests/hardware/check_camera.py csi://0 --save first.png

It opens the source exactly as the runtime does, reads frames for a while and checks that they are
RGB uint8 images of one size, that their capture timestamps increase, and that they arrive at a
sane rate. ``--expect-color`` checks the channel order: fill the view with a red (green, blue)
object and the matching channel must be the brightest. Exit status 0 when every check passes.
Not collected by pytest (the file name does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.sources import open_source

CHANNELS = {"red": 0, "green": 1, "blue": 2}


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("uri", help="source URI, e.g. camera:0, picamera2:0, csi://0, rtsp://...")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to read frames")
    parser.add_argument("--min-fps", type=float, default=5.0, help="slowest acceptable rate")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="source option"
    )
    parser.add_argument("--expect-color", choices=sorted(CHANNELS), help="check channel order")
    parser.add_argument("--save", metavar="PNG", help="save the first frame (as RGB) here")
    args = parser.parse_args(argv)
    options = dict(item.split("=", 1) for item in args.option)
    failures: list[str] = []

    try:
        source = open_source(args.uri, **{key: _value(value) for key, value in options.items()})
        opened_at = time.monotonic()
        source.open()
        print(f"opened {source.describe()} in {time.monotonic() - opened_at:.2f} s")
        frames = []
        deadline = time.monotonic() + args.seconds
        first_at = None
        while time.monotonic() < deadline:
            frame = source.read(timeout=max(0.1, deadline - time.monotonic()))
            if frame is None:
                if source.ended:
                    break
                continue
            first_at = first_at or time.monotonic()
            frames.append((frame.index, frame.timestamp, frame.image))
        source.close()
    except EdgeRuntimeError as exc:
        print(f"FAIL: {exc}")
        return 1

    if not frames:
        print(f"FAIL: no frame within {args.seconds:g} s")
        return 1
    shapes = {image.shape for _, _, image in frames}
    if len(shapes) != 1:
        failures.append(f"frames change size: {sorted(shapes)}")
    _, _, first = frames[0]
    if first.dtype != np.uint8 or first.ndim != 3 or first.shape[2] != 3:
        failures.append(f"frames are not RGB uint8 HxWx3: {first.dtype} {first.shape}")
    stamps = [stamp for _, stamp, _ in frames]
    if any(b <= a for a, b in zip(stamps, stamps[1:])):
        failures.append("capture timestamps do not increase")
    span = stamps[-1] - stamps[0]
    fps = (len(frames) - 1) / span if span > 0 else 0.0
    if fps < args.min_fps:
        failures.append(f"{fps:.1f} frames per second is below --min-fps {args.min_fps:g}")
    if args.expect_color:
        means = first.reshape(-1, 3).mean(axis=0)
        brightest = int(np.argmax(means))
        if brightest != CHANNELS[args.expect_color]:
            names = ["red", "green", "blue"]
            failures.append(
                f"expected {args.expect_color} to dominate, got {names[brightest]} "
                f"(channel means R={means[0]:.0f} G={means[1]:.0f} B={means[2]:.0f}): "
                "the channel order is wrong"
            )
    if args.save:
        import cv2

        cv2.imwrite(args.save, cv2.cvtColor(first, cv2.COLOR_RGB2BGR))
        print(f"saved the first frame to {args.save}")

    stats = source.stats_snapshot()
    print(
        f"{len(frames)} frames of {first.shape[1]}x{first.shape[0]} at {fps:.1f} fps; "
        f"captured {stats['captured']}, dropped {stats['dropped']}, "
        f"reconnects {stats['reconnects']}"
    )
    for failure in failures:
        print(f"FAIL: {failure}")
    print("PASS" if not failures else f"{len(failures)} check(s) failed")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
