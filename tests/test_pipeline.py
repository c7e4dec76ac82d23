"""The pipeline with stand-in stages: order, limits, skipped frames, overlap, hot model swap."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from edge_runtime.errors import PreprocessError, SourceError
from edge_runtime.pipeline import Pipeline, PipelineOptions, PreparedFrameQueue, RunSummary
from edge_runtime.sinks.base import Sink, StatusProvider
from edge_runtime.sinks.console import PrettySink
from edge_runtime.sinks.jsonl import JsonLinesSink
from edge_runtime.sources.base import Source
from edge_runtime.sources.live import LatestFrameBuffer
from edge_runtime.types import Classification, Frame, Prediction
from tests.fakes_io import FakeClock


class ListSource(Source):
    """A finite source of frames whose pixel value encodes the frame number (0 = corrupt)."""

    def __init__(self, values: list[int], truth: str | None = None) -> None:
        super().__init__()
        self.uri = "list:"
        self.values = list(values)
        self.truth = truth
        self.position = 0
        self.opened = self.closed = False

    def open(self) -> None:
        self.opened = True

    def read(self, timeout: float | None = None) -> Frame | None:
        if self.position >= len(self.values):
            return None
        value = self.values[self.position]
        image = np.full((4, 4, 3), value, np.uint8)
        if value == 0:
            image = np.zeros((4, 4), np.uint8)  # a corrupt frame: not RGB
        frame = Frame(image, self.position, time.monotonic(), self.uri, self.truth)
        self.position += 1
        self.stats.delivered += 1
        return frame

    def close(self) -> None:
        self.closed = True


class EchoModel:
    """Probabilities: one-hot on (pixel value mod classes); records prepare/infer intervals."""

    def __init__(self, name: str, classes: int = 4, delay: float = 0.0, offset: int = 0) -> None:
        self.name = name
        self.classes = classes
        self.delay = delay
        self.offset = offset
        self.closed = False
        self.prepare_intervals: list[tuple[float, float]] = []
        self.infer_intervals: list[tuple[float, float]] = []
        self.buffers_made = 0

    @property
    def info(self) -> Mapping[str, Any]:
        return {"name": self.name}

    def new_input(self) -> np.ndarray:
        self.buffers_made += 1
        return np.zeros((1,), np.int64)

    def prepare(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        start = time.monotonic()
        if image.ndim != 3:
            raise PreprocessError("frames must be RGB")
        time.sleep(self.delay)
        assert out is not None
        out[0] = int(image[0, 0, 0])
        self.prepare_intervals.append((start, time.monotonic()))
        return out

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        start = time.monotonic()
        time.sleep(self.delay * 1.5)
        probabilities = np.zeros(self.classes, np.float32)
        probabilities[(int(tensor[0]) + self.offset) % self.classes] = 1.0
        self.infer_intervals.append((start, time.monotonic()))
        return probabilities

    def close(self) -> None:
        self.closed = True


class TopOne:
    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def process(
        self,
        probabilities: np.ndarray,
        *,
        frame_index: int,
        timestamp: float,
        source: str = "",
        truth: str | None = None,
        latency_ms: dict[str, float] | None = None,
    ) -> Prediction:
        index = int(np.argmax(probabilities))
        label = f"{self.prefix}{index}"
        return Prediction(
            frame_index,
            timestamp,
            label,
            float(probabilities[index]),
            (Classification(index, label, float(probabilities[index])),),
            source,
            truth,
            latency_ms=dict(latency_ms or {}),
        )


class ListSink(Sink):
    name = "list"

    def __init__(self, fail_on: int | None = None) -> None:
        self.predictions: list[Prediction] = []
        self.fail_on = fail_on
        self.opened = self.closed = False
        self.status: StatusProvider | None = None

    def open(self, status: StatusProvider | None = None) -> None:
        self.opened = True
        self.status = status

    def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
        if prediction.frame_index == self.fail_on:
            raise ConnectionError("broker unreachable")
        self.predictions.append(prediction)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("pipelined", [True, False])
def test_every_frame_in_order(pipelined: bool) -> None:
    source = ListSource([1, 2, 3, 4, 5, 6, 7], truth="1")
    sink = ListSink()
    pipeline = Pipeline(
        source, EchoModel("m"), TopOne(), [sink], options=PipelineOptions(pipelined=pipelined)
    )
    summary = pipeline.run()
    assert [p.frame_index for p in sink.predictions] == list(range(7))
    assert [p.label for p in sink.predictions] == ["1", "2", "3", "0", "1", "2", "3"]
    assert summary.frames == 7
    assert summary.accuracy == pytest.approx(2 / 7)
    assert source.opened and source.closed and sink.opened and sink.closed
    assert pipeline.status.snapshot()["state"] == "stopped"
    stages = set(sink.predictions[-1].latency_ms)
    assert {"preprocess", "inference", "postprocess", "total"} <= stages


@pytest.mark.parametrize("pipelined", [True, False])
def test_max_frames(pipelined: bool) -> None:
    sink = ListSink()
    options = PipelineOptions(max_frames=3, pipelined=pipelined)
    summary = Pipeline(
        ListSource(list(range(1, 50))), EchoModel("m"), TopOne(), [sink], options=options
    ).run()
    assert summary.frames == 3
    assert [p.frame_index for p in sink.predictions] == [0, 1, 2]


@pytest.mark.parametrize("pipelined", [True, False])
def test_corrupt_frame_is_skipped_and_counted(pipelined: bool) -> None:
    sink = ListSink()
    pipeline = Pipeline(
        ListSource([1, 0, 2]),
        EchoModel("m"),
        TopOne(),
        [sink],
        options=PipelineOptions(pipelined=pipelined),
    )
    summary = pipeline.run()
    assert [p.frame_index for p in sink.predictions] == [0, 2]
    assert summary.skipped == 1
    snapshot = pipeline.status.snapshot()
    assert snapshot["errors"] == {"corrupt_frame": 1}
    assert snapshot["source"]["corrupt"] == 1


def test_failing_sink_does_not_stop_the_others() -> None:
    broken, healthy = ListSink(fail_on=1), ListSink()
    pipeline = Pipeline(ListSource([1, 2, 3]), EchoModel("m"), TopOne(), [broken, healthy])
    pipeline.run()
    assert [p.frame_index for p in healthy.predictions] == [0, 1, 2]
    assert [p.frame_index for p in broken.predictions] == [0, 2]
    assert pipeline.status.snapshot()["errors"] == {"sink_list": 1}


class ClosingPipe(io.StringIO):
    """A stream whose reader goes away (``| head``) after ``lines`` lines."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.lines = lines

    def write(self, text: str) -> int:
        if self.getvalue().count("\n") >= self.lines:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_closed_output_ends_the_run_and_the_other_sinks_get_the_last_frame(
    pipelined: bool,
) -> None:
    pipe, healthy = ClosingPipe(lines=2), ListSink()
    pipeline = Pipeline(
        ListSource(list(range(1, 1000))),
        EchoModel("m"),
        TopOne(),
        [JsonLinesSink(stream=pipe), healthy, PrettySink(stream=pipe, interval_s=0)],
        options=PipelineOptions(pipelined=pipelined),
    )
    summary = pipeline.run()  # ends by itself: the source holds 999 frames
    assert summary.output_closed and summary.frames == 3
    assert [p.frame_index for p in healthy.predictions] == [0, 1, 2]
    snapshot = pipeline.status.snapshot()
    # Stopped, not failed; no error counted, and the pretty sink's last line (at close, into the
    # same closed pipe) is dropped quietly.
    assert snapshot["state"] == "stopped" and snapshot["errors"] == {}


def test_status_reaches_the_sinks() -> None:
    sink = ListSink()
    Pipeline(ListSource([1, 2]), EchoModel("first"), TopOne(), [sink]).run()
    assert sink.status is not None
    snapshot = sink.status()
    assert snapshot["model"] == {"name": "first"} and snapshot["frames"] == 2


class RendezvousModel(EchoModel):
    """Proves overlap without timing: preparing frame k+1 waits until inferring frame k has
    begun, and inferring frame k waits until preparing frame k+1 has begun, so each pair can
    only finish when both run at the same time. A sequential loop cannot meet: each wait then
    gives up after ``patience`` seconds and counts a miss. ``last`` is the final frame's value,
    which has no successor to wait for."""

    def __init__(self, last: int, patience: float = 10.0) -> None:
        super().__init__("rendezvous")
        self.last = last
        self.patience = patience
        self.infer_started = {value: threading.Event() for value in range(1, last + 1)}
        self.prepare_started = {value: threading.Event() for value in range(1, last + 1)}
        self.misses = 0

    def _meet(self, arrived: threading.Event, other: threading.Event) -> None:
        arrived.set()
        if not other.wait(self.patience):
            self.misses += 1

    def prepare(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        value = int(image[0, 0, 0])
        if value > 1:
            self._meet(self.prepare_started[value], self.infer_started[value - 1])
        return super().prepare(image, out)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        value = int(tensor[0])
        if value < self.last:
            self._meet(self.infer_started[value], self.prepare_started[value + 1])
        return super().infer(tensor)


def test_preprocessing_overlaps_inference() -> None:
    model = RendezvousModel(last=8)
    sink = ListSink()
    Pipeline(ListSource(list(range(1, 9))), model, TopOne(), [sink]).run()
    assert len(sink.predictions) == 8
    assert model.misses == 0, "the next frame is prepared while the backend runs"
    # Buffers are reused: a small ring, not one per frame.
    assert model.buffers_made <= PipelineOptions().queue_depth + 2


class ConcurrencyProbe(EchoModel):
    """Counts calls to prepare that begin while an inference is still running."""

    def __init__(self) -> None:
        super().__init__("probe")
        self._inferring = threading.Event()
        self.overlaps = 0

    def prepare(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        self.overlaps += int(self._inferring.is_set())
        return super().prepare(image, out)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        self._inferring.set()
        try:
            return super().infer(tensor)
        finally:
            self._inferring.clear()


def test_sequential_mode_never_overlaps() -> None:
    model = ConcurrencyProbe()
    sink = ListSink()
    Pipeline(
        ListSource(list(range(1, 6))),
        model,
        TopOne(),
        [sink],
        options=PipelineOptions(pipelined=False),
    ).run()
    assert len(sink.predictions) == 5 and model.overlaps == 0


class GatedSource(ListSource):
    """Waits at one frame until the test has swapped the model."""

    def __init__(self, values: list[int], gate_at: int, gate: threading.Event) -> None:
        super().__init__(values)
        self.gate_at = gate_at
        self.gate = gate
        self.reached = threading.Event()

    def read(self, timeout: float | None = None) -> Frame | None:
        if self.position == self.gate_at:
            self.reached.set()
            assert self.gate.wait(5)
        return super().read(timeout)


@pytest.mark.parametrize("pipelined", [True, False])
def test_hot_swap_loses_no_frame(pipelined: bool) -> None:
    gate = threading.Event()
    source = GatedSource(list(range(1, 11)), gate_at=5, gate=gate)
    old, new = EchoModel("old"), EchoModel("new", offset=1)
    sink = ListSink()
    pipeline = Pipeline(
        source, old, TopOne("old-"), [sink], options=PipelineOptions(pipelined=pipelined)
    )
    runner = threading.Thread(target=pipeline.run)
    runner.start()
    assert source.reached.wait(5)
    pipeline.swap_model(new, TopOne("new-"))
    gate.set()
    runner.join(10)
    assert not runner.is_alive()
    assert [p.frame_index for p in sink.predictions] == list(range(10))
    labels = [p.label for p in sink.predictions]
    assert all(label.startswith("old-") for label in labels[:5])
    assert all(label.startswith("new-") for label in labels[5:])
    assert labels[5] == "new-3"  # frame value 6, offset 1: (6 + 1) % 4
    assert old.closed and not new.closed
    assert pipeline.status.snapshot()["model"] == {"name": "new"}


class BrokenSource(ListSource):
    def read(self, timeout: float | None = None) -> Frame | None:
        if self.position == 2:
            raise SourceError("camera:0 disappeared and did not come back within 30 s")
        return super().read(timeout)


@pytest.mark.parametrize("pipelined", [True, False])
def test_source_failure_is_raised_and_reported(pipelined: bool) -> None:
    sink = ListSink()
    pipeline = Pipeline(
        BrokenSource([1, 2, 3, 4]),
        EchoModel("m"),
        TopOne(),
        [sink],
        options=PipelineOptions(pipelined=pipelined),
    )
    with pytest.raises(SourceError, match="disappeared"):
        pipeline.run()
    assert len(sink.predictions) == 2 and sink.closed
    assert pipeline.status.snapshot()["state"] == "failed"


def test_stop_from_another_thread() -> None:
    class Endless(ListSource):
        def read(self, timeout: float | None = None) -> Frame | None:
            self.values.append(1)
            return super().read(timeout)

    class StopAfter(ListSink):
        """Asks another thread to stop the pipeline once three frames are out."""

        def __init__(self) -> None:
            super().__init__()
            self.enough = threading.Event()

        def emit(self, prediction: Prediction, frame: Frame | None = None) -> None:
            super().emit(prediction, frame)
            if len(self.predictions) == 3:
                self.enough.set()

    sink = StopAfter()
    pipeline = Pipeline(Endless([1]), EchoModel("m"), TopOne(), [sink])
    stopper = threading.Thread(target=lambda: sink.enough.wait(10) and pipeline.stop())
    stopper.start()
    summary = pipeline.run()
    stopper.join()
    assert sink.enough.is_set() and pipeline.stopping
    assert summary.frames >= 3  # the frames in flight when stop() came still finish


class LiveThenEnds(ListSource):
    """A live source: times out (None) now and then, and ends by design after its frames."""

    live = True

    def __init__(self, values: list[int]) -> None:
        super().__init__(values)
        self.calls = 0

    @property
    def ended(self) -> bool:
        return self.position >= len(self.values)

    def read(self, timeout: float | None = None) -> Frame | None:
        self.calls += 1
        if self.calls % 2 == 0:
            return None  # a read timeout, not the end
        return super().read(timeout)


@pytest.mark.parametrize("pipelined", [True, False])
def test_live_source_timeouts_are_not_the_end(pipelined: bool) -> None:
    sink = ListSink()
    summary = Pipeline(
        LiveThenEnds([1, 2, 3, 4]),
        EchoModel("m"),
        TopOne(),
        [sink],
        options=PipelineOptions(pipelined=pipelined),
    ).run()
    # A live source's frames may be superseded by newer ones (latest wins), but the run goes on
    # past every timeout to the last frame, and each frame is either inferred or superseded.
    assert sink.predictions[-1].frame_index == 3
    assert summary.frames + summary.superseded == 4
    assert summary.superseded == 0 or pipelined


# -- fresh frames: the backend gets the newest frame when it becomes free ------------------------
class LockstepCamera(Source):
    """A live camera on a fake clock. ``tick()`` captures a frame stamped with the clock's time
    into the sources' real latest-frame-wins buffer; ``settle()`` waits until the pipeline's
    producer has dealt with it (it is back waiting for the next frame, or ``busy()`` says it is
    stuck elsewhere), so the fake time only moves once the pipeline has caught up."""

    live = True

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.uri = "lockstep:"
        self.clock = clock
        self.buffer = LatestFrameBuffer()
        self.index = 0
        self.unsettled = 0
        self._cond = threading.Condition()
        self._waiting = False
        self.busy: Callable[[], bool] = lambda: False

    def tick(self) -> None:
        image = np.full((4, 4, 3), self.index % 256, np.uint8)
        self.buffer.put(Frame(image, self.index, self.clock(), self.uri))
        self.index += 1

    def read(self, timeout: float | None = None) -> Frame | None:
        with self._cond:
            self._waiting = True
            self._cond.notify_all()
        try:
            return self.buffer.get(timeout)
        finally:
            with self._cond:
                self._waiting = False

    def settle(self, patience: float = 0.5) -> None:
        def idle() -> bool:
            return (self._waiting and not self.buffer.pending) or self.busy()

        deadline = time.monotonic() + patience
        with self._cond:
            # Polled as well as notified: busy() changes without telling the camera.
            while not idle():
                if time.monotonic() > deadline:
                    self.unsettled += 1
                    return
                self._cond.wait(0.002)

    def close(self) -> None:
        self.buffer.finish()

    @property
    def ended(self) -> bool:
        return self.buffer.ended


class LockstepModel(EchoModel):
    """A 50 ms model on the fake clock: while it infers, the camera captures at 100 fps."""

    def __init__(self, camera: LockstepCamera, period: float = 0.010, ticks: int = 5) -> None:
        super().__init__("lockstep")
        self.camera, self.period, self.ticks = camera, period, ticks

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        for _ in range(self.ticks):
            self.camera.clock.advance(self.period)
            self.camera.tick()
            self.camera.settle()
        probabilities = np.zeros(self.classes, np.float32)
        probabilities[int(tensor[0]) % self.classes] = 1.0
        return probabilities


def run_lockstep(frames: int = 6) -> tuple[list[Prediction], LockstepCamera, RunSummary]:
    clock = FakeClock(start=0.0)
    camera = LockstepCamera(clock)
    sink = ListSink()
    pipeline = Pipeline(
        camera,
        LockstepModel(camera),
        TopOne(),
        [sink],
        options=PipelineOptions(max_frames=frames),
        clock=clock,
    )
    runner = threading.Thread(target=lambda: results.append(pipeline.run()))
    results: list[RunSummary] = []
    runner.start()
    camera.settle()
    camera.tick()  # the first frame; the model's inferences capture the rest
    runner.join(60)
    assert not runner.is_alive() and results
    return sink.predictions, camera, results[0]


def stale_frames(predictions: list[Prediction]) -> list[tuple[int, float, float]]:
    """Frames older at the start of their inference than one inference plus their preprocessing,
    by the pipeline's own timestamps: (frame, age, bound) in milliseconds."""
    stale = []
    for p in predictions:
        bound = p.latency_ms["inference"] + p.latency_ms["preprocess"]
        if p.latency_ms["age_at_inference"] >= bound:
            stale.append((p.frame_index, p.latency_ms["age_at_inference"], bound))
    return stale


def test_live_frames_reach_the_backend_fresh() -> None:
    # A 100 fps camera and a 50 ms model, on a fake clock that moves only inside the model's
    # inference, and only once the producer has dealt with each new frame. With a latest-wins
    # hand-off the frame taken when the backend becomes free is the one captured at that very
    # tick: age 0 against a bound of 50 ms (one inference; preprocessing takes no fake time).
    # Margin: a tick the producer has not dealt with within settle()'s 0.5 s of real time (a
    # stall of the loaded machine) makes the frame one period (10 ms) older, so four such
    # misses within one inference still pass, while a FIFO of two prepared frames hands over
    # frames 80 ms old from its third inference on (see the next test).
    predictions, camera, summary = run_lockstep()
    assert len(predictions) == 6
    assert stale_frames(predictions) == []
    if camera.unsettled == 0:  # the usual case; a missed tick shifts these by a frame
        # Each inference saw the frame of the tick its predecessor ended on; the four frames
        # in between were prepared and superseded, never queued (also during the last one).
        assert [p.frame_index for p in predictions] == [5 * i for i in range(6)]
        assert all(p.latency_ms["age_at_inference"] == 0.0 for p in predictions)
        assert summary.superseded == 4 * 6


def test_the_freshness_check_fails_when_the_slot_is_a_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The check above must be able to fail: hand prepared live frames over through a FIFO of
    # two (the file sources' queue, as the pipeline did before) and frames grow stale.
    class ReportingQueue(PreparedFrameQueue):
        """Tells the camera when the producer is stuck waiting for room in the queue."""

        def __init__(self, depth: int, stop: threading.Event) -> None:
            super().__init__(depth, stop)
            self.blocked = False

        def put(self, item: Any) -> Any:
            self.blocked = self._queue.full()
            try:
                return super().put(item)
            finally:
                self.blocked = False

    made: list[ReportingQueue] = []

    def queue_handoff(self: Pipeline) -> ReportingQueue:
        made.append(ReportingQueue(2, self._stop))
        self.source.busy = lambda: bool(made) and made[0].blocked  # type: ignore[attr-defined]
        return made[0]

    monkeypatch.setattr(Pipeline, "_handoff", queue_handoff)
    predictions, _, _ = run_lockstep(frames=4)
    stale = stale_frames(predictions)
    assert stale, "frames queued behind a 50 ms model must be older than one inference"
    assert max(age for _, age, _ in stale) >= 80.0
