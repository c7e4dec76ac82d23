"""``edge-runtime daemon``: the pipeline as a long-running systemd service.

One :class:`Daemon` owns, for the life of the process, what must outlive a reload: the runtime
status, the status server (with the live view), the fail-safe supervisor and the notifier. The
pipeline is what a reload replaces.

- Start: read and check the config, bind the status server, load the model (asking systemd for
  ``[service] model_load_timeout_s`` more with ``EXTEND_TIMEOUT_USEC``), run. ``READY=1`` once
  the first frame is classified, with ``STATUS=`` naming the model and the frame rate.
- Watchdog: ``WATCHDOG=1`` from the frame loop's thread: after each classified frame, and while
  it waits for a camera that is being reconnected on schedule (``Source.reconnecting_on_schedule``).
  A wedged loop (a backend or driver call that never returns) sends nothing, and systemd
  restarts the service after ``WatchdogSec``.
- SIGHUP: ``RELOADING=1`` + ``MONOTONIC_USEC``; the file is read and checked and the model loaded
  beside the one serving; only then is the change applied: decision settings and a new model are
  swapped in between two frames, a changed source or outputs restart the pipeline (with the old
  configuration brought back if the new one cannot start). A refused reload is logged, kept in
  the reload history of ``/status``, and changes nothing. ``READY=1`` ends the reload either way.
- SIGTERM / SIGINT: ``STOPPING=1``, the fail-safe outputs enter their state for good, the frame
  in hand finishes, sinks flush and close, exit 0. A second signal gives up (exit 130).
- A live camera that goes away is retried for ever (unless ``give_up_after_s`` is set): the
  status says ``reconnecting`` and frames resume when it is back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TextIO

from edge_runtime.config import RuntimeConfig, merge, parse_config, read_config_file
from edge_runtime.errors import BundleError, ConfigError, EdgeRuntimeError, ModelError
from edge_runtime.pipeline import Pipeline, PipelineOptions
from edge_runtime.service import logs
from edge_runtime.service.failsafe import FailSafeSupervisor
from edge_runtime.service.hardware import BoardMonitor
from edge_runtime.service.live_view import BOUNDARY, LiveView, page
from edge_runtime.service.notify import Notifier
from edge_runtime.service.signals import stop_on_signals
from edge_runtime.service.status_server import Page, StatusServer, StreamRequest
from edge_runtime.serving import ServingModel, load_serving_model, postprocessor_for
from edge_runtime.sinks import Sink
from edge_runtime.sources import options_model, parse_source_uri, scheme_kind
from edge_runtime.status import RuntimeStatus
from edge_runtime.types import Prediction
from edge_runtime.wiring import build_sinks, check_runnable, verify_update_section

log = logging.getLogger("edge_runtime.daemon")

#: reloads kept in /status
RELOAD_HISTORY = 20
#: sections whose change needs a new pipeline (source, sinks); the others are swapped in
_RESTART_PREFIXES = ("source.uri", "source.options", "outputs.", "run.")
_MODEL_PREFIXES = ("model.", "source.roi")

Loader = Callable[..., ServingModel]


@dataclass(frozen=True)
class ReloadRecord:
    """One reload: when (wall clock), ``applied`` or ``refused``, why, and what changed."""

    at: float
    outcome: str
    detail: str
    changed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": round(self.at, 3),
            "outcome": self.outcome,
            "detail": self.detail,
            "changed": list(self.changed),
        }


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and other values are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def changed_keys(old: RuntimeConfig, new: RuntimeConfig) -> tuple[str, ...]:
    """The dotted keys whose values differ between two configurations."""
    a, b = flatten(old.model_dump(mode="json")), flatten(new.model_dump(mode="json"))
    return tuple(sorted(key for key in set(a) | set(b) if a.get(key) != b.get(key)))


def service_config(config: RuntimeConfig) -> RuntimeConfig:
    """``config`` as the daemon runs it: a live source retries for ever unless the file says
    when to give up, and the console stays quiet unless ``[outputs] console`` is set (the
    journal is no terminal)."""
    updates: dict[str, Any] = {}
    kind = scheme_kind(config.source.uri)
    if kind is not None:
        declared = options_model(kind).model_fields
        _, _, query = parse_source_uri(config.source.uri)
        given = {**query, **config.source.options}
        if "give_up_after_s" in declared and "give_up_after_s" not in given:
            options = {**config.source.options, "give_up_after_s": math.inf}
            updates["source"] = config.source.model_copy(update={"options": options})
    if "console" not in config.outputs.model_fields_set:
        updates["outputs"] = config.outputs.model_copy(update={"console": None})
    return config.model_copy(update=updates) if updates else config


class Daemon:
    """The service (see the module docstring). ``run()`` from the main thread.

    Injectable for tests: ``environ`` (NOTIFY_SOCKET, WATCHDOG_USEC, JOURNAL_STREAM),
    ``notifier``, ``stream`` (where console sinks write), ``log_stream`` (stderr), ``clock``
    (monotonic), ``wall`` (the wall clock of the reload history), ``loader`` (the model loader,
    ``load_serving_model``), ``board`` (the SoC probe of /metrics), ``signals`` (False: no
    signal handlers, for a daemon run on a thread), ``configure_logging``, ``overrides`` (settings
    laid over the file's at every load, e.g. ``{"outputs": {"collect": {"dir": D}}}``).
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        *,
        environ: Mapping[str, str] | None = None,
        notifier: Notifier | None = None,
        stream: TextIO | None = None,
        log_stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        loader: Loader = load_serving_model,
        board: Callable[[], Any] | None = None,
        signals: bool = True,
        configure_logging: bool = True,
        log_format: logs.LogFormat | None = None,
        update_agent: Callable[[RuntimeConfig], Any] | None = None,
        update_poll_s: float = 1.0,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.config_path = os.fspath(config_path)
        #: laid over the file at every (re)load: the command line's options (--collect)
        self.overrides: Mapping[str, Any] = dict(overrides or {})
        self.environ = os.environ if environ is None else environ
        self.notifier = notifier or Notifier(self.environ, clock=clock)
        self.stream = stream
        self.log_stream = log_stream
        self._clock = clock
        self._wall = wall
        self._load = loader
        self._board = board
        self._signals = signals
        self._configure_logging = configure_logging
        self._log_format = log_format
        self.status = RuntimeStatus(clock=clock)
        self.config: RuntimeConfig | None = None
        self.server: StatusServer | None = None
        self.live_view: LiveView | None = None
        self.supervisor: FailSafeSupervisor | None = None
        self.pipeline: Pipeline | None = None
        self.serving: ServingModel | None = None
        self.reloads: list[ReloadRecord] = []
        self.reload_counts = {"applied": 0, "refused": 0}
        self.last_error: dict[str, Any] | None = None
        self.started = threading.Event()  # READY=1 was sent
        self._stopping = threading.Event()
        self._lock = threading.RLock()
        self._reload_lock = threading.Lock()
        self._reload_thread: threading.Thread | None = None
        self._reload_again = False
        self._handover: tuple[Pipeline, RuntimeConfig, ServingModel] | None = None
        self._retire: ServingModel | None = None
        self._fallback: tuple[RuntimeConfig, ServingModel] | None = None
        self._last_status_at: float | None = None
        self._problems: logging.Handler | None = None
        self._make_agent = update_agent
        self._update_poll_s = update_poll_s
        self.updates: Any = None  # the UpdateWorker when [update] is set
        self._agent: Any = None

    # -- control (any thread) -----------------------------------------------------------------
    def stop(self) -> None:
        """Stop after the frame in hand: STOPPING=1, outputs to their fail-safe state for good."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        log.info("stopping")
        self.notifier.stopping()
        if self.supervisor is not None:
            self.supervisor.enter("the daemon is stopping", final=True)
        with self._lock:
            pipeline = self.pipeline
        if pipeline is not None:
            pipeline.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def request_reload(self) -> None:
        """Reload in the background (a SIGHUP); reloads asked for meanwhile run once after."""
        with self._lock:
            if self._stopping.is_set():
                return
            if self._reload_thread is not None and self._reload_thread.is_alive():
                self._reload_again = True
                return
            self._reload_thread = threading.Thread(
                target=self._reload_loop, name="reload", daemon=True
            )
            self._reload_thread.start()

    def _reload_loop(self) -> None:
        while True:
            self.reload()
            with self._lock:
                if not self._reload_again or self._stopping.is_set():
                    return
                self._reload_again = False

    # -- start-up -------------------------------------------------------------------------------
    def read_config(self) -> RuntimeConfig:
        """The config file, validated and checked as ``check-config`` checks it, as the daemon
        runs it (:func:`service_config`).

        Raises:
            EdgeRuntimeError: the first problem (ConfigError, ModelError, SourceError, ...).
        """
        config = self._parse_config()
        check_runnable(config)
        return config

    def _parse_config(self) -> RuntimeConfig:
        data = merge(read_config_file(self.config_path), self.overrides)
        config = parse_config(data, where=self.config_path)
        verify_update_section(config)
        if config.update is not None:
            config = self._serve_from_store(config)
        return service_config(config)

    def _serve_from_store(self, config: RuntimeConfig) -> RuntimeConfig:
        """``config`` with ``[model] path`` set to what the update store serves. At start-up:
        recover the store, judge a probation that a restart interrupted (a crash loop, a
        watchdog restart: rolled back before anything loads), and install a first model into
        an empty store without ``[model] path``. Changes to ``[update]`` take effect on restart.
        """
        from edge_runtime.ota.agent import agent_for_config, model_to_serve

        assert config.update is not None
        if self._agent is None:
            self._agent = (self._make_agent or agent_for_config)(config)
            decision = self._agent.start_probation()
            if decision is not None and decision.verdict == "rollback":
                log.error("update: rolling back at start-up: %s", decision.reason)
                self._agent.rollback(decision.reason)
            if self._agent.store.active_path() is None and config.model.path is None:
                section = config.update
                self.notifier.extend_timeout(section.smoke_timeout_s + section.max_download_s)
            path: str | None
            path, where = model_to_serve(config, self._agent)
        else:
            active = self._agent.store.active_path()
            path, where = (str(active), "the store") if active else (config.model.path, "")
        log.info("serving %s from %s", path, where)
        model = config.model.model_copy(update={"path": path})
        return config.model_copy(update={"model": model})

    def serving_path(self) -> str | None:
        """The model path of the configuration now serving."""
        config = self.config
        return None if config is None else config.model.path

    def load_model_at(self, path: str) -> ServingModel:
        """The serving configuration's model, loaded from ``path`` instead (not swapped in).

        Raises:
            EdgeRuntimeError: it does not load.
        """
        config, pipeline = self.config, self.pipeline
        if config is None or pipeline is None:
            raise ConfigError("the daemon is still starting")
        changed = config.model_copy(
            update={"model": config.model.model_copy(update={"path": path})}
        )
        return self._load_model(changed, stills=pipeline.source.stills)

    def swap_model_path(self, path: str, detail: str) -> None:
        """Serve the model at ``path`` from the next frame on, as a reload that changes the
        model does (the old model finishes its frames, then closes); recorded in the reload
        history. A model on probation is wrapped to be counted.

        Raises:
            EdgeRuntimeError: the model does not load (nothing changes).
        """
        with self._reload_lock:
            config, pipeline = self.config, self.pipeline
            if config is None or pipeline is None:
                raise ConfigError("the daemon is still starting")
            new = config.model_copy(
                update={"model": config.model.model_copy(update={"path": path})}
            )
            fresh = self._wrap(self._load_model(new, stills=pipeline.source.stills), path)
            pipeline.swap_model(fresh.model, fresh.postprocessor, close_old=True)
            with self._lock:
                self.serving, self.config = fresh, new
            # _record publishes: the new settings and their reload record appear in one /status
            self._record("applied", detail, ("model.path",))

    def _wrap(self, serving: ServingModel, path: str | None) -> ServingModel:
        if self.updates is None or path is None:
            return serving
        wrapped: ServingModel = self.updates.wrap(serving, path)
        return wrapped

    def run(self) -> int:
        """Run until stopped or the source ends; 0 then.

        Raises:
            EdgeRuntimeError: at start-up, the config, the model, the source or the port (one
                line); later, a pipeline that failed for good.
        """
        config = self._parse_config()
        try:
            check_runnable(config)
        except (ModelError, BundleError) as exc:
            # A file that names a model that cannot load: the actuators hear it before the exit.
            self._fail_safe_outputs(config, f"the model failed to load: {exc}")
            raise
        self.config = config
        if self._configure_logging:
            logs.configure(
                config.service.log_level,
                self._log_format or config.service.log_format,
                environ=self.environ,
                stream=self.log_stream,
            )
        self._problems = logs.LastProblem(self._note_problem)
        logging.getLogger().addHandler(self._problems)
        stack = contextlib.ExitStack()
        try:
            stack.callback(self._close)
            self._start_server(config)
            self.supervisor = FailSafeSupervisor(
                config.service.stale_after_s, self.status, clock=self._clock
            )
            self.supervisor.start()
            self.status.add_observer(self._on_frame)
            if self._signals:
                stack.enter_context(
                    stop_on_signals(self, extra={signal.SIGHUP: lambda _: self.request_reload()})
                )
            self._publish_service()
            with self._lock:
                self.pipeline = self._start(config)
            if self.updates is not None:
                self.updates.start()
            self._serve()
        finally:
            stack.close()
        return 0

    def _start_server(self, config: RuntimeConfig) -> None:
        server = StatusServer.at(
            config.http,
            self.status,
            stale_after_s=config.service.stale_after_s,
            clock=self._clock,
            board=self._board or BoardMonitor().read,
        )
        if config.service.live_view:
            self.live_view = LiveView(
                fps=config.service.live_view_fps,
                max_streams=config.service.live_view_max_streams,
            )
            self.live_view.open()
            add_live_view(server, self.live_view, self.status)
        server.start()
        self.server = server
        log.info("status server at %s", server.url)

    def _start(self, config: RuntimeConfig) -> Pipeline:
        """The first pipeline. A model that does not load puts the fail-safe outputs in their
        state (opened for it, then closed) before the error goes up."""
        self.notifier.status("loading the model")
        try:
            source = check_runnable(config)
            serving = self._load_model(config, stills=source.stills)
        except EdgeRuntimeError as exc:
            self._fail_safe_outputs(config, f"the model failed to load: {exc}")
            raise
        if self._agent is not None:
            from edge_runtime.service.updates import UpdateWorker

            self.updates = UpdateWorker(self, self._agent, clock=self._clock,
                                        poll_s=self._update_poll_s)
            serving = self._wrap(serving, config.model.path)
        self.serving = serving
        self._publish_service()
        return self._pipeline(config, serving)

    def _load_model(self, config: RuntimeConfig, *, stills: bool) -> ServingModel:
        # A big model on a slow SD card can take longer than systemd's start (or reload) timeout.
        self.notifier.extend_timeout(config.service.model_load_timeout_s)
        started = time.monotonic()
        serving = self._load(config, stills=stills)
        info = serving.model.info
        log.info(
            "loaded %s v%s (%s on %s) in %.2f s",
            info.get("name") or info.get("path"),
            info.get("version", "?"),
            info.get("artifact", "?"),
            info.get("backend", "?"),
            time.monotonic() - started,
        )
        return serving

    def _pipeline(self, config: RuntimeConfig, serving: ServingModel) -> Pipeline:
        """A pipeline of ``config``'s source and outputs, over ``serving`` (not started).

        Raises:
            EdgeRuntimeError: the source or an output refuses its settings.
        """
        source = check_runnable(config)
        assert self.supervisor is not None
        sinks: list[Sink] = self.supervisor.guard(build_sinks(config, self.stream))
        if self.live_view is not None:
            sinks.append(self.live_view)
        return Pipeline(
            source,
            serving.model,
            serving.postprocessor,
            sinks,
            status=self.status,
            options=PipelineOptions(
                max_frames=config.run.max_frames, pipelined=config.run.pipelined
            ),
            clock=self._clock,
            on_idle=self._on_idle,
        )

    def _fail_safe_outputs(self, config: RuntimeConfig, reason: str) -> None:
        """Open the outputs that declare a fail-safe state, enter it, close them."""
        if self.supervisor is not None:
            self.supervisor.enter(reason)
        try:
            sinks = [s for s in build_sinks(config, self.stream) if s.fail_safe is not None]
        except EdgeRuntimeError:
            return
        for sink in sinks:
            try:
                sink.open(self.status.snapshot)
                sink.enter_fail_safe(reason)
                sink.close()
            except Exception:  # best effort: the daemon is failing already
                log.exception("could not put output %s in its fail-safe state", sink.name)

    # -- the main loop ----------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stopping.is_set():
            pipeline = self.pipeline
            assert pipeline is not None
            frames_before = self.status.frames
            try:
                pipeline.run()
            except EdgeRuntimeError as exc:
                if self._stopping.is_set():
                    return
                if self._fallback is not None and self.status.frames == frames_before:
                    # A reload's pipeline that could not start: bring the old one back.
                    if self._revert(exc):
                        continue
                raise
            if self._stopping.is_set():
                return
            with self._lock:
                handover, self._handover = self._handover, None
            if handover is None:
                log.info("the source ended; stopping")
                return
            self.pipeline, self.config, self.serving = handover[0], handover[1], handover[2]
            self._publish_service()

    def _revert(self, exc: EdgeRuntimeError) -> bool:
        fallback, self._fallback, self._retire = self._fallback, None, None
        if fallback is None:
            return False
        old_config, previous = fallback
        message = f"the reloaded configuration did not start ({exc}); back to the previous one"
        log.error("reload refused: %s", message)
        self._record("refused", message, ())
        try:
            pipeline = self._pipeline(old_config, previous)
        except EdgeRuntimeError:
            return False
        if self.serving is not None and self.serving.model is not previous.model:
            self.serving.close()
        with self._lock:
            self.pipeline, self.config, self.serving = pipeline, old_config, previous
        return True

    # -- reload ---------------------------------------------------------------------------------
    def reload(self) -> ReloadRecord:
        """Read the config file again and apply it, or refuse it and keep serving (see the
        module docstring). Returns what happened."""
        with self._reload_lock:
            self.notifier.reloading()
            try:
                record = self._apply_reload()
            except EdgeRuntimeError as exc:
                log.error("reload refused, the previous configuration keeps serving: %s", exc)
                record = self._record("refused", str(exc), ())
            finally:
                self.notifier.ready(self._status_text())
            return record

    def _apply_reload(self) -> ReloadRecord:
        old = self.config
        pipeline = self.pipeline
        serving = self.serving
        if old is None or pipeline is None or serving is None:
            raise ConfigError("the daemon is still starting; reload again once it runs")
        new = self.read_config()
        changed = changed_keys(old, new)
        if not changed:
            log.info("reload: the configuration did not change")
            return self._record("applied", "no change", ())
        stills = pipeline.source.stills
        new_model = any(key.startswith(_MODEL_PREFIXES) for key in changed)
        restart = any(key.startswith(_RESTART_PREFIXES) for key in changed)
        fresh = self._load_model(new, stills=stills) if new_model else None
        if fresh is not None:
            fresh = self._wrap(fresh, new.model.path)
        try:
            if fresh is None:
                postprocessor = postprocessor_for(serving.model, new.postprocess, stills=stills)
                target = ServingModel(serving.model, postprocessor)
            else:
                target = fresh
            if restart:
                replacement = self._pipeline(new, target)
        except BaseException:
            if fresh is not None:
                fresh.close()
            raise
        notes = []
        if "service.http" in changed:
            notes.append(f"service.http takes effect on restart (serving {self.server_url})")
        # The live view is part of the status server, which outlives reloads.
        later = [key for key in changed if key.startswith("service.live_view")]
        if later:
            notes.append(f"{', '.join(later)} take effect on restart")
        self._apply_service(new)
        if restart:
            with self._lock:
                self._fallback = (old, serving)
                self._retire = serving if fresh is not None else None
                self._handover = (replacement, new, target)
            pipeline.stop()
            detail = "restarted the pipeline with the new source or outputs"
        else:
            # The pipeline closes the old model once the frames prepared for it are done.
            pipeline.swap_model(target.model, target.postprocessor, close_old=fresh is not None)
            with self._lock:
                self.serving, self.config = target, new
            # published with its reload record below, so /status never shows one without the other
            detail = "new model swapped in" if fresh is not None else "new settings swapped in"
        if notes:
            log.warning("reload: %s", "; ".join(notes))
        log.info("reload applied: %s (%s)", detail, ", ".join(changed))
        return self._record("applied", "; ".join([detail, *notes]), changed)

    def _apply_service(self, config: RuntimeConfig) -> None:
        service = config.service
        if self._configure_logging:
            logs.set_level(service.log_level)
        if self.server is not None:
            self.server.stale_after_s = service.stale_after_s
        if self.supervisor is not None:
            self.supervisor.stale_after_s = service.stale_after_s

    @property
    def server_url(self) -> str:
        return self.server.url if self.server is not None else ""

    def _record(self, outcome: str, detail: str, changed: tuple[str, ...]) -> ReloadRecord:
        record = ReloadRecord(self._wall(), outcome, detail, changed)
        with self._lock:
            self.reloads = [*self.reloads, record][-RELOAD_HISTORY:]
            self.reload_counts[outcome] = self.reload_counts.get(outcome, 0) + 1
        self._publish_service()
        return record

    # -- per frame and idle (the frame loop's thread) ----------------------------------------------
    def _on_frame(self, prediction: Prediction) -> None:
        config = self.config
        if config is not None and config.service.watchdog:
            self.notifier.watchdog()
        if not self.started.is_set():
            self.started.set()
            self.notifier.ready(self._status_text())
            self._last_status_at = self._clock()
            log.info("ready: %s", self._status_text())
        elif config is not None:
            self._maybe_status(config.service.status_interval_s)
        if self._fallback is not None and self._handover is None:
            # The reloaded pipeline runs: the model it replaced (if any) can go.
            retire, self._retire, self._fallback = self._retire, None, None
            if retire is not None:
                retire.close()

    def _on_idle(self) -> None:
        config, pipeline = self.config, self.pipeline
        if config is None or pipeline is None:
            return
        if pipeline.source.reconnecting_on_schedule(config.service.reconnect_grace_s):
            if config.service.watchdog:
                self.notifier.watchdog()
            self._maybe_status(config.service.status_interval_s)

    def _maybe_status(self, interval_s: float) -> None:
        now = self._clock()
        if self._last_status_at is None or now - self._last_status_at >= interval_s:
            self._last_status_at = now
            self.notifier.status(self._status_text())

    def _status_text(self) -> str:
        serving = self.serving
        info = serving.model.info if serving is not None else {}
        name = info.get("name") or os.path.basename(str(info.get("path", "model")))
        version = f" v{info['version']}" if info.get("version") else ""
        where = f" ({info.get('artifact', '?')} on {info.get('backend', '?')})" if info else ""
        source = self.status.snapshot().get("source", {}).get("state", "starting")
        return f"{name}{version}{where}: {self.status.fps():.1f} fps, source {source}"

    # -- status -----------------------------------------------------------------------------------
    def _note_problem(self, problem: dict[str, Any]) -> None:
        self.last_error = problem
        self._publish_service()

    def _publish_service(self) -> None:
        config = self.config
        serving = self.serving
        settings: dict[str, Any] = {}
        if serving is not None:
            post = serving.postprocessor.config
            settings = {
                "threshold": post.threshold,
                "smoothing": post.smoothing,
                "window": post.window,
                "debounce": post.debounce,
            }
        with self._lock:
            reloads = [record.to_dict() for record in self.reloads]
            counts = dict(self.reload_counts)
        self.status.set_section(
            "service",
            {
                "config": self.config_path,
                "pid": os.getpid(),
                "http": self.server_url,
                "live_view": self.live_view is not None,
                "watchdog_s": self.notifier.watchdog_interval_s,
                "stale_after_s": config.service.stale_after_s if config else None,
                "decisions": settings,
                "reloads": reloads,
                "reload_counts": counts,
                "last_error": self.last_error,
            },
        )

    def _close(self) -> None:
        """Everything the daemon owns, in reverse order of starting."""
        self._stopping.set()
        thread = self._reload_thread
        if thread is not None:
            thread.join(timeout=5.0)
        if self.updates is not None:
            self.updates.stop()
        if self.supervisor is not None:
            self.supervisor.close()
        self.status.remove_observer(self._on_frame)
        owned = (self.serving, self._retire)
        for serving in {id(s.model): s for s in owned if s is not None}.values():
            serving.close()
        self.serving = self._retire = None
        if self.live_view is not None:
            self.live_view.shutdown()
        if self.server is not None:
            self.server.close()
        if self._problems is not None:
            logging.getLogger().removeHandler(self._problems)
        self.notifier.close()


def add_live_view(server: StatusServer, view: LiveView, status: RuntimeStatus) -> None:
    """Serve ``view`` on ``server``: ``/``, ``/latest.jpg``, ``/live.json``, ``/stream.mjpg``."""
    page_headers = {
        # Everything is inline and same-origin: nothing else may load or run.
        "Content-Security-Policy": "default-src 'none'; img-src 'self' blob: data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'",
        "X-Content-Type-Options": "nosniff",
    }
    body = page()

    def front() -> Page:
        return HTTPStatus.OK, body, "text/html; charset=utf-8", page_headers

    def latest() -> Page:
        encoded = view.latest()
        if encoded is None:
            return (
                HTTPStatus.SERVICE_UNAVAILABLE,
                json.dumps({"error": "no frame yet"}).encode(),
                "application/json",
                {"Retry-After": "1"},
            )
        headers = {"X-Frame-Index": str(encoded.frame_index)}
        return HTTPStatus.OK, encoded.jpeg, "image/jpeg", headers

    def live() -> Page:
        snapshot = server.public_snapshot()
        keys = ("state", "message", "model", "source", "fps", "latest", "latency_ms")
        data = {key: snapshot.get(key) for key in keys}
        data.update(
            update=snapshot.get("update"),
            fail_safe=snapshot.get("fail_safe"),
            history=view.history.points(),
            view=view.describe(),
        )
        return HTTPStatus.OK, json.dumps(data, default=str).encode(), "application/json", {}

    def stream(request: StreamRequest) -> None:
        if not view.join_stream():
            message = f"at most {view.max_streams} live streams at once; retry later"
            request.refuse(HTTPStatus.SERVICE_UNAVAILABLE, message)
            return
        try:
            request.start(f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            if request.head_only:
                return
            view.stream(request.write, request.closing)
        finally:
            view.leave_stream()

    server.add_page("/", front)
    server.add_page("/latest.jpg", latest, cached=False)
    server.add_page("/live.json", live)
    server.add_stream("/stream.mjpg", stream)
