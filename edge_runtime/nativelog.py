"""Native libraries' chatter on standard error, kept off a command line's one-line promise.

LiteRT prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` from C++ straight to
file descriptor 2 (its minimal logger honours no environment variable), OpenCV prints
``[ WARN:0@...]`` lines and FFmpeg ``[tcp @ 0x...]`` lines, TensorFlow its oneDNN and CUDA notes.
:func:`quiet_native_logs` sets the variables the libraries read when they load
(``OPENCV_LOG_LEVEL``, ``OPENCV_FFMPEG_LOGLEVEL``, ``TF_CPP_MIN_LOG_LEVEL``), keeping any the user
set, and :func:`filtered_native_stderr` wraps a native call whose chatter no variable reaches: it
catches what the call writes to fd 2, drops the lines known to be noise and writes the rest back,
so no real error is lost. The command lines turn both on unless ``--verbose``; a Python program
gets the libraries' own behaviour unless it calls :func:`quiet_native_logs`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, MutableMapping

#: set before the libraries load; values as each documents them
QUIET_ENVIRONMENT = {
    "OPENCV_LOG_LEVEL": "ERROR",  # OpenCV: SILENT FATAL ERROR WARNING INFO DEBUG VERBOSE
    "OPENCV_FFMPEG_LOGLEVEL": "-8",  # FFmpeg's AV_LOG_QUIET, read by OpenCV's FFmpeg backend
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow C++: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR
}

#: lines a native library writes that say nothing a user must act on
NOISE = (
    re.compile(r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.\s*$"),
    re.compile(r"^INFO: Initialized TensorFlow Lite runtime\.\s*$"),
    # the TFLite converter's quantizer prints its settings from C++ on every int8 conversion
    re.compile(
        r"^fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, "
        r"output_inference_type: \w+\s*$"
    ),
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written"),
)

_quiet = False
_lock = threading.Lock()


def quiet_native_logs(environ: MutableMapping[str, str] | None = None) -> None:
    """Ask the native libraries to keep their notes to themselves (see the module docstring):
    the variables are set only where the user has not set them, and :func:`filtered_native_stderr`
    starts filtering."""
    global _quiet
    env = os.environ if environ is None else environ
    for name, value in QUIET_ENVIRONMENT.items():
        env.setdefault(name, value)
    _quiet = True
    with contextlib.suppress(Exception):  # OpenCV already loaded: tell it directly
        if "cv2" in sys.modules:
            cv2 = sys.modules["cv2"]
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def is_noise(line: str) -> bool:
    """Whether ``line`` is one of the :data:`NOISE` lines."""
    return any(pattern.match(line) for pattern in NOISE)


@contextlib.contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """While the block runs, what anything writes to fd 2 is caught; afterwards every line but
    the known noise is written back to standard error. Does nothing unless
    :func:`quiet_native_logs` was called. Keep the block short: other threads' messages in it
    come out after it."""
    if not _quiet:
        yield
        return
    with _lock, tempfile.TemporaryFile() as caught:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 at all
            yield
            return
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [
                line
                for line in caught.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not is_noise(line)
            ]
            if kept:
                os.write(2, "".join(kept).encode())
