"""The Python API: open a camera, load a model, classify, draw the answer on the picture.

::

    import edge_runtime as er

    with er.open_source("camera:0") as camera, er.load_model("models/traffic-signs") as model:
        frame = camera.snapshot()                   # one fresh RGB frame
        result = model.classify(frame)              # label, score, top, unknown, latency_ms
        er.annotate(frame, result).save("snap.jpg")  # the picture with its label drawn on it
        for result in model.stream(camera, max_frames=100):  # smoothing, thresholds, debounce
            if result.event:
                print(result.label, result.score)

These are the objects ``edge-runtime`` itself runs: :func:`open_source` is the sources'
registry, :class:`Model` wraps the :class:`~edge_runtime.model.LoadedModel` that ``run`` and
``classify`` load, its decisions come from the same postprocessor the runtime configuration
builds, and :meth:`Model.stream` runs the same :class:`~edge_runtime.pipeline.Pipeline`. Every
error is an :class:`~edge_runtime.errors.EdgeRuntimeError`.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from pydantic import ValidationError

from edge_runtime.errors import ConfigError, OutputError, PreprocessError
from edge_runtime.model import LoadedModel
from edge_runtime.sinks.base import Sink
from edge_runtime.sources import Source, open_source
from edge_runtime.types import Frame, Prediction

__all__ = ["AnnotatedImage", "Model", "annotate", "load_model", "open_source"]

ImageLike = Frame | np.ndarray | str | os.PathLike[str]


def load_model(
    path: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | list[str] | None = None,
    backend: str = "auto",
    precision: str | None = None,
    threads: int | None = None,
    profile: str | None = None,
) -> Model:
    """Load a bundle (directory or ``.tar``), a bare ``.tflite`` or a bare ``.onnx``, for this
    device: the artifact and backend are chosen as ``edge-runtime run`` chooses them (the
    detected device profile, or ``profile``).

    ::

        model = er.load_model("models/traffic-signs")
        model = er.load_model("mobilenet.tflite", labels="labels.txt", threads=4)

    Raises:
        ModelError, BundleError, BackendError: the model cannot be loaded (the message says why).
        MissingDependencyError: its backend is not installed (the message names the extra).
        ConfigError: a bad setting (an unknown profile, negative threads).
    """
    from devices import profile_for_this_device
    from edge_runtime.artifacts import resolve_profile
    from edge_runtime.model import load_model as load
    from edge_runtime.model import options_from_profile

    chosen = resolve_profile(profile) if profile is not None else profile_for_this_device()
    loaded = load(
        path,
        labels=labels,
        backend=backend,
        precision=precision,
        profile=chosen,
        options=options_from_profile(chosen, threads=threads),
    )
    return Model(loaded)


class Model:
    """A loaded model: :meth:`classify` one picture, :meth:`stream` a source.

    ``labels`` (output order), ``name``, ``version``, ``threshold`` (the bundle's; 0 for a bare
    model: every picture gets its best class) and ``loaded`` (the underlying
    :class:`~edge_runtime.model.LoadedModel`). Not thread-safe: use one model from one thread.
    Close it (or use ``with``) to free the backend.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self._still_postprocessors: dict[tuple[int | None, float | None], Any] = {}

    @property
    def labels(self) -> list[str]:
        return list(self.loaded.labels)

    @property
    def name(self) -> str:
        return str(self.loaded.info.get("name") or "")

    @property
    def version(self) -> int | str | None:
        version: int | str | None = self.loaded.info.get("version")
        return version

    @property
    def threshold(self) -> float:
        """The confidence below which a result is ``unknown`` by default (the bundle's)."""
        return float(self.loaded.thresholds.default)

    @property
    def info(self) -> Mapping[str, Any]:
        """What ``/status`` shows of the model: artifact, format, precision, backend, input."""
        return self.loaded.info

    def classify(
        self, image: ImageLike, *, top_k: int | None = None, threshold: float | None = None
    ) -> Prediction:
        """The decision for one picture: ``label`` (``"unknown"`` below the threshold),
        ``score``, ``top`` (the best classes with their probabilities), ``unknown`` and
        ``latency_ms`` per stage. ``image`` is a frame from :meth:`Source.snapshot`, an RGB
        uint8 array (height x width x 3) or an image file's path. Thresholds are the bundle's
        unless ``threshold`` is given; nothing is smoothed.

        ::

            result = model.classify("parrot.jpg", top_k=3)
            print(result.label, f"{result.score:.2f}", [c.label for c in result.top])

        Raises:
            PreprocessError: the picture is not an RGB uint8 image, or the file cannot be read.
            ConfigError: a bad ``top_k`` or ``threshold``.
            BackendError: the inference failed.
        """
        frame = _as_frame(image)
        key = (top_k, threshold)
        postprocessor = self._still_postprocessors.get(key)
        if postprocessor is None:
            postprocessor = self._postprocessor(stills=True, top_k=top_k, threshold=threshold)
            self._still_postprocessors[key] = postprocessor
        postprocessor.reset()  # each picture is its own decision
        started = time.perf_counter()
        tensor = self.loaded.prepare(frame.image)
        prepared = time.perf_counter()
        probabilities = self.loaded.infer(tensor)
        inferred = time.perf_counter()
        prediction: Prediction = postprocessor.process(
            probabilities,
            frame_index=frame.index,
            timestamp=frame.timestamp,
            source=frame.source,
            truth=frame.truth,
        )
        done = time.perf_counter()
        prediction.latency_ms.update(
            preprocess=(prepared - started) * 1e3,
            inference=(inferred - prepared) * 1e3,
            postprocess=(done - inferred) * 1e3,
            total=(done - started) * 1e3,
        )
        return prediction

    @overload
    def stream(
        self,
        source: Source | str,
        *,
        with_frames: Literal[False] = False,
        max_frames: int | None = None,
        threshold: float | None = None,
        smooth: int | None = None,
        smoothing: str | None = None,
        debounce: int | None = None,
        top_k: int | None = None,
    ) -> Iterator[Prediction]: ...

    @overload
    def stream(
        self,
        source: Source | str,
        *,
        with_frames: Literal[True],
        max_frames: int | None = None,
        threshold: float | None = None,
        smooth: int | None = None,
        smoothing: str | None = None,
        debounce: int | None = None,
        top_k: int | None = None,
    ) -> Iterator[tuple[Frame, Prediction]]: ...

    def stream(
        self,
        source: Source | str,
        *,
        with_frames: bool = False,
        max_frames: int | None = None,
        threshold: float | None = None,
        smooth: int | None = None,
        smoothing: str | None = None,
        debounce: int | None = None,
        top_k: int | None = None,
    ) -> Iterator[Prediction] | Iterator[tuple[Frame, Prediction]]:
        """Classify a source frame after frame, as ``edge-runtime run`` does: the same
        pipeline (a live camera's newest frame, never a backlog), the same smoothing,
        thresholds and debounce (2 frames on a stream, 1 on image files; ``result.event`` is
        true where a new label is announced). Ends with the source, after ``max_frames``, or
        when the loop stops. A source given as a URI is opened and closed here; a
        :class:`Source` object stays open for more (``close`` it, or use ``with``).

        ::

            for result in model.stream("synthetic:traffic-signs", max_frames=300, smooth=5):
                if result.event:
                    print(result.frame_index, result.label)
            for frame, result in model.stream(camera, with_frames=True, max_frames=10):
                er.annotate(frame, result).save(f"frame{frame.index}.jpg")

        ``smooth``: average over N frames (as ``--smooth N``); ``smoothing``: ``ema`` or
        ``majority``; ``threshold``, ``debounce``, ``top_k``: as the ``run`` options.

        Raises:
            ConfigError: a bad setting (raised here, before anything opens).
            SourceError: the source cannot be opened or fails for good (raised by the loop).
            UnknownComponentError, MissingDependencyError: as :func:`open_source`.
        """
        owned = not isinstance(source, Source)
        if owned:
            if not isinstance(source, (str, os.PathLike)):
                raise ConfigError(f"a source is a URI, a path or a Source, got {type(source)}")
            opened: Source = open_source(os.fspath(source))
        else:
            assert isinstance(source, Source)
            opened = source
        if smoothing is None and smooth is not None:
            smoothing = "ema" if smooth > 1 else "none"
        postprocessor = self._postprocessor(
            stills=opened.stills,
            top_k=top_k,
            threshold=threshold,
            smoothing=smoothing,
            window=smooth if smooth and smooth > 1 else None,
            debounce=debounce,
        )
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"max_frames must be at least 1, got {max_frames}")
        return _run_stream(
            self.loaded,
            opened if owned else _Borrowed(opened),
            postprocessor,
            max_frames=max_frames,
            with_frames=with_frames,
        )

    def _postprocessor(self, *, stills: bool, **settings: Any) -> Any:
        from edge_runtime.config import PostprocessSection
        from edge_runtime.serving import postprocessor_for
        from edge_runtime.validation import describe_validation_error

        given = {key: value for key, value in settings.items() if value is not None}
        try:
            section = PostprocessSection(**given)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from None
        return postprocessor_for(self.loaded, section, stills=stills)

    def close(self) -> None:
        """Free the backend (and the unpacked copy of a ``.tar`` bundle). Safe to call twice."""
        self.loaded.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        version = f" v{self.version}" if self.version else ""
        return f"<Model {self.name}{version} {self.info.get('artifact', '')}>"


def _as_frame(image: ImageLike) -> Frame:
    if isinstance(image, Frame):
        return image
    if isinstance(image, (str, os.PathLike)):
        from edge_runtime.imageio import read_image

        return Frame(read_image(image), 0, time.monotonic(), source=os.fspath(image))
    if isinstance(image, np.ndarray):
        return Frame(image, 0, time.monotonic())
    raise PreprocessError(
        f"expected a frame, an RGB image array or an image path, got {type(image).__name__}"
    )


# --------------------------------------------------------------------------------------------
# Streaming: the pipeline on a thread, its predictions handed over through a small queue

_END = object()


class _Handover(Sink):
    """Hands each prediction to the iterating thread; waits while it is busy (backpressure:
    a live source's latest-frame slot drops frames meanwhile, a file source waits)."""

    name = "python"

    def __init__(self, results: queue.Queue[Any], cancelled: threading.Event) -> None:
        self._results = results
        self._cancelled = cancelled

    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        while not self._cancelled.is_set():
            try:
                self._results.put((frame, prediction), timeout=0.1)
                return
            except queue.Full:
                continue


class _Borrowed(Source):
    """A caller's source lent to a pipeline: everything passes through but ``close``, so the
    camera stays open for the next snapshot or stream."""

    def __init__(self, inner: Source) -> None:
        super().__init__()
        self._inner = inner
        self.uri = inner.location
        self.live = inner.live
        self.stills = inner.stills

    def open(self) -> None:
        self._inner.open()

    def read(self, timeout: float | None = None) -> Frame | None:
        return self._inner.read(timeout)

    @property
    def ended(self) -> bool:
        return self._inner.ended

    @property
    def state(self) -> str:
        return self._inner.state

    def describe(self) -> dict[str, Any]:
        return self._inner.describe()

    def stats_snapshot(self) -> dict[str, Any]:
        return self._inner.stats_snapshot()


def _run_stream(
    model: LoadedModel,
    source: Source,
    postprocessor: Any,
    *,
    max_frames: int | None,
    with_frames: bool,
) -> Iterator[Any]:
    from edge_runtime.pipeline import Pipeline, PipelineOptions

    results: queue.Queue[Any] = queue.Queue(maxsize=2)
    cancelled = threading.Event()
    pipeline = Pipeline(
        source,
        model,
        postprocessor,
        [_Handover(results, cancelled)],
        options=PipelineOptions(max_frames=max_frames),
    )
    failure: list[BaseException] = []

    def work() -> None:
        try:
            pipeline.run()
        except BaseException as exc:  # noqa: BLE001 - raised again in the iterating thread
            failure.append(exc)
        finally:
            while True:
                try:
                    results.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    if cancelled.is_set():
                        break

    thread = threading.Thread(target=work, name="edge-stream", daemon=True)
    thread.start()
    try:
        while True:
            item = results.get()
            if item is _END:
                break
            frame, prediction = item
            yield (frame, prediction) if with_frames else prediction
        if failure:
            raise failure[0]
    finally:
        cancelled.set()
        pipeline.stop()
        while thread.is_alive():
            try:
                results.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


# --------------------------------------------------------------------------------------------
# Pictures


@dataclass(frozen=True)
class AnnotatedImage:
    """A picture with a decision drawn on it: ``image`` is RGB uint8 (height x width x 3)."""

    image: np.ndarray

    def save(self, path: str | os.PathLike[str], *, quality: int = 90) -> Path:
        """Write the picture (JPEG for ``.jpg``/``.jpeg``, else by suffix: ``.png``, ...)
        whole or not at all; returns the path.

        Raises:
            OutputError: the file cannot be written (no such folder, no space, no permission,
                an unknown suffix).
        """
        import cv2

        target = Path(path)
        suffix = target.suffix.lower() or ".jpg"
        jpeg = suffix in (".jpg", ".jpeg")
        params = [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)] if jpeg else []
        try:
            ok, data = cv2.imencode(suffix, cv2.cvtColor(self.image, cv2.COLOR_RGB2BGR), params)
        except cv2.error:
            ok = False
        if not ok:
            raise OutputError(f"cannot write {target}: no image format for '{suffix}'")
        partial = target.with_name(f".{target.name}.partial")
        try:
            partial.write_bytes(data.tobytes())
            os.replace(partial, target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
        return target

    def show(self, title: str = "edge-runtime", *, wait_ms: int = 0) -> None:
        """Show the picture in a window until a key is pressed (or ``wait_ms`` passes).

        Raises:
            OutputError: there is no display (no ``DISPLAY`` or ``WAYLAND_DISPLAY``), or this
                OpenCV has no window support (``opencv-python-headless``).
        """
        show_window(self.image, title, wait_ms=wait_ms)


def display_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """Why no window can be shown here, or None when there is a display to try."""
    env = os.environ if environ is None else environ
    if not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return "there is no display here (DISPLAY is not set)"
    return None


def show_window(image_rgb: np.ndarray, title: str, *, wait_ms: int = 0) -> None:
    """Show an RGB picture in an OpenCV window (see :meth:`AnnotatedImage.show`).

    Raises:
        OutputError: no display, or no window support in this OpenCV.
    """
    import cv2

    problem = display_problem()
    if problem is not None:
        raise OutputError(f"cannot open a window: {problem}")
    try:
        cv2.imshow(title, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
        cv2.waitKey(wait_ms)
        cv2.destroyWindow(title)
    except cv2.error:
        raise OutputError(
            "cannot open a window: this OpenCV has no window support (opencv-python-headless); "
            "open the saved file in an image viewer"
        ) from None


def annotate(image: Frame | np.ndarray, result: Prediction) -> AnnotatedImage:
    """The picture with ``result`` drawn on it: the label and score as its title, the top
    classes as bars, as ``--snapshot-dir`` and the live view draw them.

    ::

        er.annotate(frame, model.classify(frame)).save("snap.jpg")

    Raises:
        PreprocessError: ``image`` is not an RGB uint8 picture.
    """
    import cv2

    from edge_runtime.sinks.preview import annotate as draw

    pixels = image.image if isinstance(image, Frame) else image
    if (
        not isinstance(pixels, np.ndarray)
        or pixels.dtype != np.uint8
        or pixels.ndim != 3
        or pixels.shape[2] != 3
    ):
        raise PreprocessError("annotate needs an RGB uint8 picture (height x width x 3)")
    return AnnotatedImage(cv2.cvtColor(draw(pixels, result), cv2.COLOR_BGR2RGB))
