"""The runtime config: [outputs] assembled from the sinks' own declarations, older keys, flags,
and adding a sink as one new module plus its registry line."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from edge_runtime import registry
from edge_runtime.cli import build_parser
from edge_runtime.commands.run import config_from_args
from edge_runtime.config import (
    RuntimeConfig,
    merge,
    normalize_outputs,
    parse_config,
    runtime_config_model,
)
from edge_runtime.errors import ConfigError
from edge_runtime.sinks import output_configs
from edge_runtime.wiring import build_sinks

BASE = {"model": {"path": "m.tflite"}, "source": {"uri": "camera:0"}}


def outputs(**section: Any) -> Any:
    return parse_config({**BASE, "outputs": section}).outputs


def test_outputs_are_the_sinks_declarations() -> None:
    assert list(output_configs()) == [
        "console", "reject", "jsonl", "mqtt", "webhook", "gpio", "preview", "collect"
    ]
    schema = runtime_config_model().model_json_schema()
    assert set(schema["$defs"]["OutputsConfig"]["properties"]) == {"http", *output_configs()}
    for config in output_configs().values():
        assert config.__doc__ and all(f.description for f in config.model_fields.values())
    # Validating with the static class hands over to the assembled schema.
    direct = RuntimeConfig.model_validate({**BASE, "outputs": {"mqtt": "mqtt://b"}})
    assert isinstance(direct, RuntimeConfig) and direct.outputs.get("mqtt").url == "mqtt://b"


def test_every_sink_config_default_is_the_sinks_own() -> None:
    # The config models restate the sinks' keyword defaults; they must never drift apart.
    for name in registry.names("sink"):
        sink = registry.load("sink", name)
        config = getattr(sink, "Config", None)
        if config is None:
            continue
        parameters = inspect.signature(sink).parameters
        for field, info in config.model_fields.items():
            parameter = parameters.get(field)
            if parameter is None or parameter.default is inspect.Parameter.empty:
                continue
            if info.is_required():
                continue
            default = info.get_default(call_default_factory=True)
            assert default == parameter.default or (default == {} and parameter.default is None), (
                name,
                field,
            )


def test_todays_files_keep_validating() -> None:
    # The README's example and the flat keys older files use.
    section = outputs(http="0.0.0.0:8080", gpio={"pin": 17, "label": "counterfeit", "hold_s": 1.5})
    assert section.http == "0.0.0.0:8080"
    gpio = section.get("gpio")
    assert (gpio.pin, gpio.label, gpio.hold_s) == (17, "counterfeit", 1.5)
    assert section.get("console").format == "pretty"  # on unless turned off
    older = outputs(
        console="jsonl",
        jsonl_file="out.jsonl",
        jsonl_max_bytes=1000,
        mqtt="mqtt://broker:1883",
        webhook="https://example.org/hook",
        reject_label="counterfeit",
        preview="out.mp4",
        snapshot_dir="snaps",
    )
    assert older.get("console").format == "jsonl"
    assert (older.get("jsonl").path, older.get("jsonl").max_bytes) == ("out.jsonl", 1000)
    assert older.get("mqtt").url == "mqtt://broker:1883"
    assert older.get("webhook").url == "https://example.org/hook"
    assert older.get("reject").label == "counterfeit"
    assert (older.get("preview").video, older.get("preview").snapshot_dir) == ("out.mp4", "snaps")
    # A size limit without a file changed nothing before, and changes nothing now.
    assert outputs(jsonl_max_bytes=10).get("jsonl") is None
    assert outputs(snapshot_dir="snaps").get("preview").video is None


def test_tables_give_every_setting_of_a_sink() -> None:
    section = outputs(
        mqtt={"url": "mqtts://hub", "topic": "plant/line-3", "qos": 0, "every_frame": True},
        console="none",
    )
    mqtt = section.get("mqtt")
    assert (mqtt.topic, mqtt.qos, mqtt.every_frame) == ("plant/line-3", 0, True)
    assert [type(o).__name__ for o in section.configured()] == ["ConsoleConfig", "MqttConfig"]
    assert build_sinks(parse_config({**BASE, "outputs": {"console": "none"}})) == []


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"slack": "https://x"}, "outputs.slack: unknown setting (known: collect, console,"),
        ({"mqtt": {"url": "mqtt://b", "colour": 1}}, "outputs.mqtt.colour: unknown setting"),
        ({"mqtt": "http://b"}, "outputs.mqtt.url: 'http://b' is not an MQTT broker URL"),
        ({"mqtt": {"url": "mqtt://b", "qos": 3}}, "outputs.mqtt.qos"),
        ({"webhook": "ftp://x"}, "outputs.webhook.url: webhook URL must start with http"),
        ({"gpio": {"pin": 17}}, "outputs.gpio.label: is missing (it is required)"),
        ({"console": "fancy"}, "outputs.console.format"),
        ({"preview": {"fps": 30}}, "outputs.preview: the preview needs a video file"),
        ({"http": "notaport"}, "outputs.http: 'notaport' is not HOST:PORT"),
        ({"jsonl_file": "a", "jsonl": "b"}, "outputs: jsonl_file and jsonl.path both set"),
    ],
)
def test_bad_outputs_name_their_key_path(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**BASE, "outputs": section}, where="runtime.toml")
    assert str(caught.value).startswith("runtime.toml: ") and message in str(caught.value)


def test_flags_come_from_the_sinks_and_override_the_file(tmp_path: Path) -> None:
    config_file = tmp_path / "runtime.toml"
    config_file.write_text(
        '[model]\npath = "m.tflite"\n[source]\nuri = "camera:0"\n'
        '[outputs]\nmqtt = { url = "mqtt://old", topic = "kept" }\njsonl_file = "old.jsonl"\n'
    )
    args = build_parser().parse_args(
        [
            "run",
            "--config",
            str(config_file),
            "--mqtt",
            "mqtt://new",
            "--jsonl-file",
            "new.jsonl",
            "--gpio-pin",
            "17",
            "--reject-label",
            "counterfeit",
            "-o",
            "none",
        ]
    )
    section = config_from_args(args).outputs
    assert (section.get("mqtt").url, section.get("mqtt").topic) == ("mqtt://new", "kept")
    assert section.get("jsonl").path == "new.jsonl"
    assert section.get("console").format == "none"
    # --gpio-label defaults to --reject-label; the pin's digits are a BCM number.
    assert (section.get("gpio").pin, section.get("gpio").label) == (17, "counterfeit")
    lone_pin = build_parser().parse_args(["run", "-m", "m", "-s", "camera:0", "--gpio-pin", "4"])
    with pytest.raises(ConfigError, match="--gpio-pin needs --gpio-label"):
        config_from_args(lone_pin)


def test_merge_is_deep_and_ignores_unset_options() -> None:
    base = {"outputs": {"mqtt": {"url": "a", "topic": "t"}}, "run": {"max_frames": 3}}
    given = {"outputs": {"mqtt": {"url": "b"}, "http": None}, "run": {"max_frames": None}}
    merged = merge(base, given)
    assert merged == {"outputs": {"mqtt": {"url": "b", "topic": "t"}}, "run": {"max_frames": 3}}
    assert base["outputs"]["mqtt"]["url"] == "a"  # not changed in place
    assert normalize_outputs({"reject_label": "x"}) == {"reject": {"label": "x"}}


def test_parsing_a_config_imports_no_optional_package() -> None:
    code = (
        "import sys\n"
        "from edge_runtime.config import parse_config\n"
        "parse_config({'model': {'path': 'm'}, 'source': {'uri': 'synthetic:banknotes'},\n"
        "  'outputs': {'mqtt': 'mqtt://b', 'gpio': {'pin': 17, 'label': 'x'}}})\n"
        "heavy = [m for m in ('paho', 'gpiozero', 'picamera2', 'prometheus_client',\n"
        "  'onnxruntime', 'ai_edge_litert') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_building_the_command_line_imports_no_sink() -> None:
    code = (
        "import sys, edge_runtime.cli as cli\n"
        "cli.build_parser()\n"
        "print([m for m in ('numpy', 'cv2', 'pydantic', 'edge_runtime.sinks') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


BEEP_SINK = '''
"""A sink added the way the docs say: this one file and its registry line."""

from typing import ClassVar

from pydantic import Field

from edge_runtime.sinks.base import Flag, Sink, SinkConfig, SinkContext


class BeepConfig(SinkConfig):
    """[outputs] beep: beep on a label."""

    key = "beep"
    shorthand = "label"
    flags = (Flag(("--beep",), "label", "beep when this label is decided", "LABEL"),)

    label: str = Field(description="The label that beeps.")
    times: int = Field(1, ge=1, description="Beeps per event.")

    def build(self, context: SinkContext) -> list[Sink]:
        return [BeepSink(self.label, times=self.times)]


class BeepSink(Sink):
    name = "beep"
    Config: ClassVar = BeepConfig

    def __init__(self, label: str, *, times: int = 1) -> None:
        self.label, self.times = label, times

    def emit(self, prediction, frame=None) -> None:
        pass
'''


def test_a_new_sink_is_one_module_and_its_registry_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "beep_sink.py").write_text(textwrap.dedent(BEEP_SINK))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry._ENTRIES, "sink", dict(registry._ENTRIES["sink"]))
    registry.register("sink", "beep", "beep_sink:BeepSink")  # the one line

    config = parse_config({**BASE, "outputs": {"beep": {"label": "stop", "times": 2}}})
    sinks = build_sinks(config)
    assert [type(s).__name__ for s in sinks] == ["PrettySink", "BeepSink"]
    assert (sinks[1].label, sinks[1].times) == ("stop", 2)
    with pytest.raises(ConfigError, match="outputs.beep.times"):
        parse_config({**BASE, "outputs": {"beep": {"label": "stop", "times": 0}}})
    args = build_parser().parse_args(["run", "-m", "m", "-s", "camera:0", "--beep", "yield"])
    assert config_from_args(args).outputs.get("beep").label == "yield"


# -- sources: each declares its options --------------------------------------------------------
#: constructor arguments that are no user options: what tests and programs pass in
INJECTED = {"clock", "sleep", "rand", "scene_factory", "capture_factory", "build_information"}


def test_every_source_declares_its_options_with_the_constructors_defaults() -> None:
    from edge_runtime.sources import _constructor_keywords

    for kind in registry.names("source"):
        source = registry.load("source", kind)
        declared = source.Options.model_fields
        keywords = _constructor_keywords(source)
        assert set(declared) <= keywords, (kind, set(declared) - keywords)
        assert keywords - set(declared) <= INJECTED, (kind, keywords - set(declared))
        defaults: dict[str, Any] = {}
        for klass in reversed(source.__mro__):
            init = klass.__dict__.get("__init__")
            if init is not None and klass.__module__.startswith("edge_runtime.sources"):
                for p in inspect.signature(init).parameters.values():
                    if p.kind is p.KEYWORD_ONLY and p.default is not p.empty:
                        defaults[p.name] = p.default
        for name, info in declared.items():
            assert info.description, (kind, name)
            assert info.get_default() == defaults[name], (kind, name)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"uri": "synthetic:banknotes", "options": {"speed": 2}}, "source.options.speed: unknown"),
        ({"uri": "camera:0", "options": {"width": "wide"}}, "source.options.width: must be a"),
        ({"uri": "csi://0", "options": {"flip": 9}}, "source.options.flip"),
        ({"uri": "synthetic:banknotes?speed=2"}, "source: unknown option speed for a synthetic"),
    ],
)
def test_source_options_are_checked_with_the_key_path(
    source: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        parse_config({**BASE, "source": source})


def test_source_options_are_converted_and_a_paths_wait_for_its_kind(tmp_path: Path) -> None:
    config = parse_config({**BASE, "source": {"uri": "camera:0", "options": {"width": "640"}}})
    assert config.source.options == {"width": 640}
    folder = tmp_path / "images"
    folder.mkdir()
    # A path's kind (images or video) is known only by looking at it: `run` and check-config do.
    loose = parse_config({**BASE, "source": {"uri": str(folder), "options": {"pad": 1}}})
    assert loose.source.options == {"pad": 1}
    from edge_runtime.sources import open_source

    with pytest.raises(ConfigError, match="unknown option pad for a images source"):
        open_source(str(folder), pad=1)


def test_check_config_refuses_options_the_source_does_not_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_runtime.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    model = tmp_path / "m.tflite"
    model.write_bytes(b"")
    config_file = tmp_path / "runtime.toml"
    config_file.write_text(
        f'[model]\npath = "{model}"\n[source]\nuri = "{folder}"\noptions = {{ pad = 1 }}\n'
    )
    assert main(["check-config", str(config_file)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "source.options: unknown option pad" in err


PATTERN_SOURCE = '''
"""A source added the way the docs say: this one file and its registry line."""

import numpy as np
from pydantic import Field

from edge_runtime.sources.base import Source, SourceOptions
from edge_runtime.types import Frame


class PatternOptions(SourceOptions):
    level: int = Field(0, ge=0, le=255, description="The grey level of every frame.")
    frames: int = Field(2, ge=0, description="How many frames.")


class PatternSource(Source):
    Options = PatternOptions

    def __init__(self, uri: str, *, level: int = 0, frames: int = 2) -> None:
        super().__init__()
        self.uri, self.level, self.frames, self.sent = uri, level, frames, 0

    def read(self, timeout=None):
        if self.sent >= self.frames:
            return None
        self.sent += 1
        return Frame(np.full((4, 4, 3), self.level, np.uint8), self.sent - 1, 0.0, self.uri)
'''


def test_a_new_source_is_one_module_and_its_registry_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_runtime.sources import open_source

    (tmp_path / "pattern_source.py").write_text(textwrap.dedent(PATTERN_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry._ENTRIES, "source", dict(registry._ENTRIES["source"]))
    registry.register("source", "pattern", "pattern_source:PatternSource")  # the one line

    config = parse_config({**BASE, "source": {"uri": "pattern:grey", "options": {"level": 9}}})
    source = open_source(config.source.uri, **config.source.options)
    assert [int(frame.image[0, 0, 0]) for frame in source] == [9, 9]
    with pytest.raises(ConfigError, match="source.options.level"):
        parse_config({**BASE, "source": {"uri": "pattern:grey", "options": {"level": 300}}})
    with pytest.raises(ConfigError, match="unknown option size for a pattern source"):
        open_source("pattern:grey", size=3)
