"""The pipeline: source -> preprocess -> backend -> postprocess -> sinks.

This is where the stages' data meet, frame by frame (``wiring`` builds the stages from a config,
``serving`` loads the model and its postprocessor). Two threads keep the backend busy: a producer
reads frames and prepares input tensors into a small ring of preallocated buffers, while the
consumer (the thread that calls :meth:`Pipeline.run`) runs inference, postprocessing and the sinks.
The runtime status it reports to is handed in and outlives it.

How prepared frames reach the backend depends on the source:

- **live** sources (cameras, streams, paced synthetic scenes) capture in their own thread into a
  latest-frame-wins slot, and the prepared frame waits in a second one-slot hand-off
  (:class:`PreparedFrameSlot`): a newer prepared frame replaces one the backend has not taken yet.
  So the frame the backend gets when it becomes free is the newest one prepared, at most one
  camera period plus one preprocessing old, instead of the tail of a queue (a queue of two in
  front of a 50 ms model held frames ~150 ms old). Replaced frames are counted as
  ``superseded``.
- **file** sources (folders, videos, synthetic scenes without ``fps``) deliver every frame in
  order through a short FIFO (:class:`PreparedFrameQueue`, ``queue_depth``), so preprocessing the
  next frames overlaps inference and nothing is skipped.

Every result carries the frame's age, from capture (``Frame.timestamp``) to the start of its
inference (``latency_ms["age_at_inference"]``) and to its decision (``latency_ms["total"]``).

The model can be swapped while the pipeline runs (:meth:`Pipeline.swap_model`); frames already
prepared for the old model finish on it, the next frame uses the new one, and no frame is lost.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge_runtime.errors import EdgeRuntimeError, OutputClosedError, PreprocessError
from edge_runtime.sinks.base import Sink
from edge_runtime.sources.base import Source
from edge_runtime.status import RuntimeStatus
from edge_runtime.types import Frame, Prediction

log = logging.getLogger(__name__)


class PipelineModel(Protocol):
    """What the pipeline needs of a model (edge_runtime.model.LoadedModel provides it)."""

    @property
    def info(self) -> Mapping[str, Any]: ...

    def new_input(self) -> np.ndarray:
        """A fresh input buffer of the model's input shape and dtype."""
        ...

    def prepare(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Turn an RGB frame into the model input, into ``out`` when given."""
        ...

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Class probabilities for one prepared input."""
        ...

    def close(self) -> None: ...


class FramePostprocessor(Protocol):
    """Turns probabilities into a Prediction, keeping smoothing and debounce state across frames."""

    def process(
        self,
        probabilities: np.ndarray,
        *,
        frame_index: int,
        timestamp: float,
        source: str = "",
        truth: str | None = None,
        latency_ms: dict[str, float] | None = None,
    ) -> Prediction: ...


@dataclass(frozen=True)
class PipelineOptions:
    """How the pipeline runs.

    ``max_frames``: stop after this many results (None: until the source ends or ``stop()``).
    ``pipelined``: prepare the next frame while the current one is inferred (off = one thread, for
    comparison). ``queue_depth``: prepared frames of a *file* source waiting for the backend (a
    live source always hands over through one latest-wins slot). ``read_timeout``: how long a read
    from a live source may wait before the loop checks for ``stop()``.
    """

    max_frames: int | None = None
    pipelined: bool = True
    queue_depth: int = 2
    read_timeout: float = 0.5


@dataclass
class RunSummary:
    """What one run of the pipeline did.

    ``skipped``: frames preprocessing refused. ``superseded``: frames of a live source prepared
    but replaced by a newer one before the backend was free (never inferred).
    """

    frames: int
    seconds: float
    fps: float
    accuracy: float | None
    unknown: int
    skipped: int
    status: dict[str, Any] = field(default_factory=dict)
    #: the run ended because a sink's reader went away (standard output piped into ``head``)
    output_closed: bool = False
    superseded: int = 0


@dataclass
class _Work:
    frame: Frame
    tensor: np.ndarray
    generation: int
    model: PipelineModel
    free: queue.Queue[np.ndarray]
    preprocess_ms: float
    ready_at: float


_END = object()


class PreparedFrameSlot:
    """The hand-off of prepared frames from a live source's producer to the backend: one slot,
    the newest prepared frame wins.

    ``put`` never blocks: it stores the item and returns the one it replaced (prepared, never
    inferred), so the producer can reuse its buffer. ``take`` returns the pending item, waiting
    up to ``timeout``; after ``finish`` it returns the pending item, then ``_END``.
    """

    #: preallocated input buffers the producer needs: one inferred, one waiting, one being prepared
    buffers = 3

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: _Work | None = None
        self._finished = False

    def put(self, item: _Work) -> _Work | None:
        """Store ``item``; returns the unread item it replaced, or None."""
        with self._cond:
            replaced, self._item = self._item, item
            self._cond.notify_all()
            return replaced

    def take(self, timeout: float) -> _Work | object | None:
        """The pending item; ``_END`` once finished and empty; None after ``timeout`` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._finished, timeout)
            if self._item is not None:
                item, self._item = self._item, None
                return item
            return _END if self._finished else None

    def finish(self) -> None:
        """No more items: ``take`` returns the pending one, then ``_END``."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def drain(self) -> list[_Work]:
        """Remove and return what is pending (the pipeline is stopping)."""
        with self._cond:
            item, self._item = self._item, None
            return [item] if item is not None else []


class PreparedFrameQueue:
    """The hand-off for file sources: a FIFO of ``depth`` prepared frames, every frame in order.

    ``put`` waits while the queue is full; it returns None once the item is queued, or the item
    itself when ``stop`` is set while it waits (the pipeline is stopping).
    """

    def __init__(self, depth: int, stop: threading.Event) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self._stop = stop
        self.buffers = max(1, depth) + 2

    def put(self, item: _Work) -> _Work | None:
        """Queue ``item`` (waits while full); returns ``item`` when stopped first, else None."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return None
            except queue.Full:
                continue
        return item

    def take(self, timeout: float) -> _Work | object | None:
        """The oldest item, ``_END`` after the last, or None after ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def finish(self) -> None:
        """Queue the end marker (waits for room unless the pipeline is stopping)."""
        while True:
            try:
                self._queue.put(_END, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set():
                    return

    def drain(self) -> list[_Work]:
        """Remove and return what is queued (the pipeline is stopping)."""
        items: list[_Work] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return items
            if isinstance(item, _Work):
                items.append(item)


class Pipeline:
    """Runs frames from a source through a model into sinks. See the module docstring."""

    def __init__(
        self,
        source: Source,
        model: PipelineModel,
        postprocessor: FramePostprocessor,
        sinks: Sequence[Sink] = (),
        *,
        status: RuntimeStatus | None = None,
        options: PipelineOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.source = source
        #: called from the frame loop's thread each time it waited for a frame in vain (a
        #: watchdog tells a loop that waits for a reconnecting camera from a wedged one)
        self.on_idle = on_idle
        self.sinks = list(sinks)
        self.status = status or RuntimeStatus(clock=clock)
        self.options = options or PipelineOptions()
        self._clock = clock
        self._stop = threading.Event()
        self._swap_lock = threading.Lock()
        self._model = model
        self._postprocessor = postprocessor
        self._generation = 0
        self._pending: tuple[PipelineModel, FramePostprocessor, bool] | None = None
        self._next_postprocessor: FramePostprocessor | None = None
        self._retiring: dict[int, tuple[PipelineModel, bool]] = {}
        self._skipped = 0
        self._superseded = 0
        self._count_lock = threading.Lock()
        self._producer_error: BaseException | None = None
        self._closed_sinks: set[int] = set()

    # -- control ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the pipeline to finish the frame in hand and return from :meth:`run`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def model(self) -> PipelineModel:
        """The model frames are prepared for now (the newest after a swap)."""
        return self._model

    @property
    def postprocessor(self) -> FramePostprocessor:
        """The postprocessor of the model now serving (or the one a swap has queued)."""
        return self._next_postprocessor or self._postprocessor

    def swap_model(
        self, model: PipelineModel, postprocessor: FramePostprocessor, *, close_old: bool = True
    ) -> None:
        """Serve ``model`` from the next frame on, without stopping the stream.

        Frames already prepared for the old model finish on it; then the old model is closed (unless
        ``close_old`` is false) and the status reports the new one.
        """
        with self._swap_lock:
            self._pending = (model, postprocessor, close_old)

    def _take_pending(self) -> int:
        """Adopt a pending model (producer side). Returns the current generation."""
        with self._swap_lock:
            if self._pending is not None:
                model, postprocessor, close_old = self._pending
                self._pending = None
                self._retiring[self._generation] = (self._model, close_old)
                self._model = model
                self._next_postprocessor = postprocessor
                self._generation += 1
            return self._generation

    # -- running ---------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Open the source and sinks, process frames until the end, ``max_frames`` or ``stop()``.

        Raises:
            EdgeRuntimeError: the source or a sink could not be opened, or the source failed for
                good. Per-frame problems (a corrupt frame, a sink that cannot send) are counted and
                skipped instead.
        """
        started = self._clock()
        self._stop.clear()
        self._closed_sinks = set()
        self.status.set_state("starting")
        self.status.set_model(self._model.info)
        self.source.open()
        opened: list[Sink] = []
        try:
            for sink in self.sinks:
                sink.open(self.status.snapshot)
                opened.append(sink)
            self.status.set_source(self.source.describe(), self._source_stats)
            self.status.set_state("running")
            if self.options.pipelined:
                self._run_pipelined()
            else:
                self._run_sequential()
            if self._producer_error is not None:
                raise self._producer_error
        except BaseException as exc:
            self.status.set_state("failed", str(exc))
            raise
        finally:
            self._stop.set()
            for sink in opened:
                try:
                    sink.close()
                except Exception:
                    log.exception("closing sink %s failed", getattr(sink, "name", sink))
            self.source.close()
            self._close_retired(all_of_them=True)
        if self.status.snapshot()["state"] != "failed":
            self.status.set_state("stopped")
        seconds = self._clock() - started
        snapshot = self.status.snapshot()
        frames = int(snapshot["frames"])
        return RunSummary(
            frames=frames,
            seconds=seconds,
            fps=frames / seconds if seconds > 0 else 0.0,
            accuracy=snapshot["accuracy"],
            unknown=int(snapshot["unknown"]),
            skipped=self._skipped,
            status=snapshot,
            output_closed=bool(self._closed_sinks),
            superseded=self._superseded,
        )

    def _source_stats(self) -> dict[str, Any]:
        stats = self.source.stats_snapshot()
        # Frames the source delivered but preprocessing refused count as corrupt too.
        stats["corrupt"] = stats.get("corrupt", 0) + self._skipped
        if self.source.live:
            with self._count_lock:
                stats["superseded"] = self._superseded
        return stats

    def _read(self) -> Frame | None | object:
        """The next frame; ``_END`` when a finite source is exhausted; None to poll again."""
        frame = self.source.read(timeout=self.options.read_timeout)
        if frame is None:
            # A live source also returns None when a read times out; only `ended` means "over".
            return _END if (not self.source.live or self.source.ended) else None
        return frame

    def _run_sequential(self) -> None:
        buffers: dict[int, np.ndarray] = {}
        while not self._stop.is_set():
            frame = self._read()
            if frame is _END:
                break
            if frame is None:
                self._idle()
                continue
            assert isinstance(frame, Frame)
            generation = self._take_pending()
            self._adopt_postprocessor(generation)
            model = self._model
            if generation not in buffers:
                buffers = {generation: model.new_input()}
            start = self._clock()
            try:
                tensor = model.prepare(frame.image, out=buffers[generation])
            except PreprocessError as exc:
                self._skip(frame, exc)
                continue
            ready = self._clock()
            self._finish(frame, model, tensor, (ready - start) * 1e3, ready)

    def _handoff(self) -> PreparedFrameSlot | PreparedFrameQueue:
        """How prepared frames reach the backend: latest wins for a live source, a FIFO else."""
        if self.source.live:
            return PreparedFrameSlot()
        return PreparedFrameQueue(self.options.queue_depth, self._stop)

    def _run_pipelined(self) -> None:
        handoff = self._handoff()
        producer = threading.Thread(
            target=self._produce, args=(handoff,), name="edge-preprocess", daemon=True
        )
        producer.start()
        current_generation = 0
        try:
            while True:
                item = handoff.take(timeout=0.1)
                if item is None:
                    if not producer.is_alive():
                        break
                    self._idle()
                    continue
                if item is _END:
                    break
                assert isinstance(item, _Work)
                if item.generation != current_generation:
                    current_generation = item.generation
                    self._adopt_postprocessor(current_generation)
                try:
                    self._finish(
                        item.frame, item.model, item.tensor, item.preprocess_ms, item.ready_at
                    )
                finally:
                    item.free.put(item.tensor)
                if self._stop.is_set():
                    break
        finally:
            self._stop.set()
            # Unblock a producer waiting for a free buffer or queue slot, then let it end.
            while producer.is_alive():
                for leftover in handoff.drain():
                    leftover.free.put(leftover.tensor)
                producer.join(timeout=0.05)

    def _produce(self, handoff: PreparedFrameSlot | PreparedFrameQueue) -> None:
        ring_generation = -1
        free: queue.Queue[np.ndarray] = queue.Queue()
        try:
            while not self._stop.is_set():
                frame = self._read()
                if frame is _END:
                    break
                if frame is None:
                    continue
                assert isinstance(frame, Frame)
                generation = self._take_pending()
                model = self._model
                if generation != ring_generation:
                    # Buffers belong to one model's input shape: a new model gets a new ring.
                    free = queue.Queue()
                    for _ in range(handoff.buffers):
                        free.put(model.new_input())
                    ring_generation = generation
                buffer = self._wait(free)
                if buffer is None:
                    break
                start = self._clock()
                try:
                    tensor = model.prepare(frame.image, out=buffer)
                except PreprocessError as exc:
                    free.put(buffer)
                    self._skip(frame, exc)
                    continue
                ready = self._clock()
                item = _Work(frame, tensor, generation, model, free, (ready - start) * 1e3, ready)
                left = handoff.put(item)
                if left is item:
                    break  # stopping
                if left is not None:
                    # A newer frame was ready before the backend took this one.
                    left.free.put(left.tensor)
                    with self._count_lock:
                        self._superseded += 1
        except BaseException as exc:  # noqa: BLE001 - handed to run(), which raises it
            self._producer_error = exc
        finally:
            handoff.finish()

    def _wait(self, free: queue.Queue[np.ndarray]) -> np.ndarray | None:
        while not self._stop.is_set():
            try:
                return free.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    def _idle(self) -> None:
        if self.on_idle is not None:
            try:
                self.on_idle()
            except Exception:  # a failing hook must not stop the frame loop
                log.exception("the pipeline's idle hook failed")

    def _skip(self, frame: Frame, exc: EdgeRuntimeError) -> None:
        self._skipped += 1
        self.status.count_error("corrupt_frame")
        log.warning("skipped frame %d from %s: %s", frame.index, frame.source or "source", exc)

    def _adopt_postprocessor(self, generation: int) -> None:
        """Consumer side: the first frame of a new model switches the postprocessor and status."""
        next_post = self._next_postprocessor
        if next_post is not None:
            self._postprocessor = next_post
            self._next_postprocessor = None
            self.status.set_model(self._model.info)
        self._close_retired(below=generation)

    def _close_retired(self, below: int | None = None, all_of_them: bool = False) -> None:
        for generation in sorted(self._retiring):
            if all_of_them or (below is not None and generation < below):
                model, close = self._retiring.pop(generation)
                if close and model is not self._model:
                    try:
                        model.close()
                    except Exception:
                        log.exception("closing the previous model failed")

    def _finish(
        self,
        frame: Frame,
        model: PipelineModel,
        tensor: np.ndarray,
        preprocess_ms: float,
        ready_at: float,
    ) -> None:
        start = self._clock()
        probabilities = model.infer(tensor)
        inferred = self._clock()
        latency = {
            "capture": max(0.0, (ready_at - frame.timestamp) * 1e3 - preprocess_ms),
            "preprocess": preprocess_ms,
            "queue": max(0.0, (start - ready_at) * 1e3),
            "inference": (inferred - start) * 1e3,
            # How old the frame was when the backend began on it: what freshness means.
            "age_at_inference": max(0.0, (start - frame.timestamp) * 1e3),
        }
        prediction = self._postprocessor.process(
            probabilities,
            frame_index=frame.index,
            timestamp=frame.timestamp,
            source=frame.source,
            truth=frame.truth,
            latency_ms=latency,
        )
        done = self._clock()
        latency["postprocess"] = (done - inferred) * 1e3
        latency["total"] = max(0.0, (done - frame.timestamp) * 1e3)  # the age at decision
        prediction = dataclasses.replace(prediction, latency_ms=latency)
        for sink in self.sinks:
            if id(sink) in self._closed_sinks:
                continue
            try:
                sink.emit(prediction, frame)
            except OutputClosedError as exc:
                # Nobody reads the output any more (`| head`): the run is over, as for any Unix
                # tool writing into a closed pipe; the other sinks still get this frame.
                self._closed_sinks.add(id(sink))
                self._stop.set()
                log.info("sink %s: %s; stopping", getattr(sink, "name", sink), exc)
            except Exception as exc:  # noqa: BLE001 - one failing sink must not stop the others
                self.status.count_error(f"sink_{getattr(sink, 'name', 'unknown')}")
                log.warning("sink %s failed: %s", getattr(sink, "name", sink), exc)
        self.status.record(prediction)
        limit = self.options.max_frames
        if limit is not None and self.status.frames >= limit:
            self._stop.set()
