"""``edge-runtime run``: classify a stream of frames in real time."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import Any

log = logging.getLogger("edge_runtime.run")

EXAMPLES = """\
examples:
  edge-runtime run --model models/traffic-signs --source synthetic:traffic-signs --max-frames 300
  edge-runtime run --model models/banknotes --source synthetic:banknotes --reject-label counterfeit
  edge-runtime run --model bundle/ --source camera:0 --threshold 0.6 --smooth 5 --http 0.0.0.0:8080
  edge-runtime run --model model-int8.tflite --source rtsp://cam.local/stream --output jsonl
  edge-runtime run --model bundle/ --source csi://0 --gpio-pin 17 --gpio-label counterfeit
  edge-runtime run --config /etc/edge-classify/runtime.toml

sources: synthetic:traffic-signs, synthetic:banknotes, camera:0, v4l2:///dev/video0, csi://0,
  gst:<pipeline>, rtsp://..., http(s)://... (MJPEG), picamera2:0, a video file, a folder of
  images or a glob. Options go after '?': synthetic:traffic-signs?seed=3&fps=30.
Ctrl-C stops after the frame in hand and prints a summary; a second Ctrl-C gives up at once
(exit code 130). Piped into a reader that exits (`| head -1`), the run ends too (exit code 0).
"""


def register(subparsers: Any) -> None:
    from edge_runtime.commands.classify import add_model_arguments

    parser = subparsers.add_parser(
        "run",
        help="classify a live stream (camera, video, folder, synthetic scenes)",
        description="Classify frames from a source in real time and send the results to sinks.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="a runtime TOML file; options override it")
    add_model_arguments(parser)
    # The model is required unless a config file names it.
    for action in parser._actions:
        if action.dest == "model":
            action.required = False
    parser.add_argument("--source", "-s", metavar="URI", help="where frames come from")
    parser.add_argument(
        "--roi", metavar="X,Y,W,H", help="region of interest, fractions of the frame"
    )
    post = parser.add_argument_group("decisions")
    out = parser.add_argument_group("outputs")
    out.add_argument("--http", metavar="HOST:PORT", help="serve /healthz /status /latest /metrics")
    # These need the postprocess defaults and the sinks' declarations: added when `run` is used.
    later = getattr(parser, "defer", lambda add: add())
    later(lambda: _add_decision_arguments(post))
    later(lambda: _add_output_flags(out))
    run = parser.add_argument_group("run")
    run.add_argument("--max-frames", "-n", type=int, metavar="N", help="stop after N frames")
    run.add_argument("--sequential", action="store_true", help="no pipelining (for comparison)")
    run.add_argument(
        "--status-interval", type=float, metavar="S", help="seconds between status lines (5)"
    )
    parser.set_defaults(handler=run_command)


def _add_decision_arguments(post: Any) -> None:
    from edge_runtime.postprocess import STILLS_DEBOUNCE, STREAM_DEBOUNCE

    post.add_argument("--top-k", "-k", type=int, metavar="K", help="classes kept per frame (5)")
    post.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="minimum confidence, below it 'unknown' (default: the bundle's)",
    )
    post.add_argument(
        "--smooth", type=int, metavar="N", help="smooth scores over N frames (EMA; 1 = off)"
    )
    post.add_argument(
        "--smoothing", choices=("ema", "majority"), help="how --smooth combines frames (ema)"
    )
    post.add_argument(
        "--debounce",
        type=int,
        metavar="K",
        help=f"frames a new label must hold to be announced (default: {STREAM_DEBOUNCE} on a "
        f"stream, {STILLS_DEBOUNCE} on image files)",
    )
    post.add_argument("--allow", metavar="L1,L2", help="report only these classes")
    post.add_argument("--deny", metavar="L1,L2", help="never report these classes")


def _add_output_flags(out: Any) -> None:
    """Each sink declares its own flags with its [outputs] settings."""
    from edge_runtime.sinks import output_configs

    for config in output_configs().values():
        for flag in config.flags:
            out.add_argument(
                *flag.names,
                dest=_flag_dest(config.key, flag.field),
                metavar=flag.metavar,
                choices=flag.choices,
                help=flag.help,
            )


def _flag_dest(key: str, field: str) -> str:
    return f"output:{key}:{field}"


def _output_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``[outputs]`` tables from the sinks' flags that were given."""
    from edge_runtime.sinks import output_configs

    tables: dict[str, dict[str, Any]] = {}
    for config in output_configs().values():
        for flag in config.flags:
            value = getattr(args, _flag_dest(config.key, flag.field), None)
            if value is not None:
                tables.setdefault(config.key, {})[flag.field] = value
    return tables


def _verify_flag_outputs(outputs: dict[str, Any], given: dict[str, dict[str, Any]]) -> None:
    """An output turned on by flags lacks a setting that has a flag: name both flags.

    Raises:
        ConfigError: e.g. "--gpio-pin needs --gpio-label".
    """
    from edge_runtime.errors import ConfigError
    from edge_runtime.sinks import output_configs

    for key, fields in given.items():
        config = output_configs()[key]
        table = outputs.get(key) or {}
        flag_of = {flag.field: flag.names[0] for flag in config.flags}
        for name, info in config.model_fields.items():
            if info.is_required() and name not in table and name in flag_of:
                have = ", ".join(flag_of[field] for field in fields)
                raise ConfigError(f"{have} needs {flag_of[name]}")


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [name.strip() for name in text.split(",") if name.strip()]


def config_from_args(args: argparse.Namespace) -> Any:
    """The RuntimeConfig the options (and ``--config`` file) describe.

    Raises:
        ConfigError: a missing model or source, or invalid values.
    """
    from edge_runtime.config import merge, normalize_outputs, parse_config, read_config_file
    from edge_runtime.errors import ConfigError

    base = read_config_file(args.config) if args.config else {}
    if isinstance(base.get("outputs"), dict):
        try:
            base["outputs"] = normalize_outputs(base["outputs"])
        except ConfigError as exc:
            raise ConfigError(f"{args.config}: outputs: {exc}") from None
    smoothing = args.smoothing
    if args.smooth is not None and smoothing is None:
        smoothing = "ema" if args.smooth > 1 else "none"
    flag_outputs = _output_overrides(args)
    overrides: dict[str, Any] = {
        "model": {
            "path": args.model,
            "labels": args.labels,
            "backend": None if args.backend == "auto" and args.config else args.backend,
            "artifact": args.artifact,
            "precision": args.precision,
            "threads": args.threads,
            "profile": args.profile,
        },
        "source": {"uri": args.source, "roi": args.roi},
        "postprocess": {
            "top_k": args.top_k,
            "threshold": args.threshold,
            "smoothing": smoothing,
            "window": args.smooth if args.smooth and args.smooth > 1 else None,
            "debounce": args.debounce,
            "allow": _names(args.allow),
            "deny": _names(args.deny),
        },
        "outputs": {"http": args.http, **flag_outputs},
        "run": {
            "max_frames": args.max_frames,
            "pipelined": False if args.sequential else None,
            "status_interval_s": args.status_interval,
        },
    }
    merged = merge(base, overrides)
    outputs = merged.get("outputs") or {}
    gpio, reject = outputs.get("gpio"), outputs.get("reject")
    if isinstance(gpio, dict) and "label" not in gpio and isinstance(reject, dict):
        # A gate wired to the rejected label is the common case: --gpio-label may be left out.
        if "label" in reject:
            gpio["label"] = reject["label"]
    _verify_flag_outputs(outputs, flag_outputs)
    if not merged.get("model", {}).get("path") and not merged.get("update"):
        raise ConfigError("no model: give --model (a bundle, .tflite or .onnx) or a --config file")
    if not merged.get("source", {}).get("uri"):
        raise ConfigError("no source: give --source URI (e.g. camera:0, synthetic:traffic-signs)")
    return parse_config(merged, where=args.config or "options")


def serve_from_update_store(config: Any) -> Any:
    """``config`` with ``[model] path`` set to the model its ``[update]`` store serves
    (installing the newest eligible version first when the store is empty).

    Raises:
        OtaError: nothing to serve and nothing could be installed.
    """
    from edge_runtime.ota.agent import agent_for_config, model_to_serve

    path, where = model_to_serve(config, agent_for_config(config))
    log.info("serving %s from %s", path, where)
    return config.model_copy(update={"model": config.model.model_copy(update={"path": path})})


def run_command(args: argparse.Namespace) -> int:
    """Run the pipeline the options describe until the source ends, ``--max-frames`` or a signal.

    The status server (``--http``) starts before the model loads and stops after the pipeline,
    so it answers during the load and reports the final state; the model is closed at the end.

    Raises:
        EdgeRuntimeError: bad options, a model or source that cannot be opened, a taken port.
    """
    from edge_runtime.redaction import redact
    from edge_runtime.service.signals import stop_on_signals
    from edge_runtime.service.status_server import StatusServer
    from edge_runtime.sinks.console import ConsoleConfig
    from edge_runtime.status import RuntimeStatus
    from edge_runtime.terminal import printable
    from edge_runtime.wiring import build_pipeline

    config = config_from_args(args)
    if config.update is not None and args.model is None:
        config = serve_from_update_store(config)
    status = RuntimeStatus()
    with contextlib.ExitStack() as stack:
        if config.outputs.http:
            stack.enter_context(StatusServer.at(config.outputs.http, status))
        pipeline = build_pipeline(config, status=status)
        stack.callback(lambda: pipeline.model.close())
        info = pipeline.model.info
        console = config.outputs.get("console")
        if isinstance(console, ConsoleConfig) and console.format == "pretty":
            name = info.get("name") or info.get("path", "model")
            version = f" v{info['version']}" if info.get("version") else ""
            decisions = getattr(pipeline.postprocessor, "config", None)
            # A bare model carries no threshold: every frame gets its best class; say so.
            bare = decisions is not None and not (
                decisions.threshold or decisions.per_class_thresholds
            )
            note = "; no threshold: never 'unknown', --threshold T sets one" if bare else ""
            banner = (
                f"edge-runtime: {name}{version} [{info.get('artifact', '')} on "
                f"{info.get('backend', '?')}{note}] <- {redact(config.source.uri)}"
            )
            print(printable(banner), flush=True)
        with stop_on_signals(pipeline):
            summary = pipeline.run()
    if summary.output_closed:
        return 0  # piped into `head`, which has read what it wanted
    if summary.frames == 0:
        print("edge-runtime: no frame was classified", file=sys.stderr)
        return 1
    return 0
