"""Loading the serving model alone (what reload and hot swap call), and one postprocess config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge_runtime.config import PostprocessSection, RuntimeConfig, parse_config
from edge_runtime.errors import ConfigError
from edge_runtime.model import load_model
from edge_runtime.postprocess import STILLS_DEBOUNCE, STREAM_DEBOUNCE, PostprocessConfig
from edge_runtime.serving import load_serving_model, postprocessor_for
from edge_runtime.wiring import build_pipeline
from tests.conftest import write_onnx_bundle


def config_for(bundle: Path, **sections: object) -> RuntimeConfig:
    return parse_config({"model": {"path": str(bundle)}, "source": {"uri": "camera:0"}, **sections})


def test_section_defaults_are_the_postprocess_defaults() -> None:
    section, defaults = PostprocessSection(), PostprocessConfig()
    for name in ("top_k", "smoothing", "window"):
        assert getattr(section, name) == getattr(defaults, name), name
    assert section.threshold is None and section.debounce is None  # the model's, the source's


def test_section_over_a_models_defaults() -> None:
    bundle_defaults = PostprocessConfig(threshold=0.4, per_class_thresholds={"red": 0.7})
    unset = PostprocessSection().to_postprocess_config(bundle_defaults)
    assert unset.threshold == 0.4 and unset.per_class_thresholds == {"red": 0.7}
    assert unset.debounce == STREAM_DEBOUNCE
    assert PostprocessSection().to_postprocess_config(bundle_defaults, stills=True).debounce == (
        STILLS_DEBOUNCE
    )
    chosen = PostprocessSection(
        threshold=0.0, per_class_thresholds={"blue": 0.9}, debounce=4, smoothing="ema", deny=["red"]
    ).to_postprocess_config(bundle_defaults, stills=True)
    assert (chosen.threshold, dict(chosen.per_class_thresholds)) == (0.0, {"blue": 0.9})
    assert (chosen.debounce, chosen.smoothing, chosen.deny) == (4, "ema", ("red",))
    with pytest.raises(ConfigError, match="smoothing"):
        dataclasses.replace(chosen, smoothing="median")  # type: ignore[arg-type]


def test_load_serving_model_alone(onnx_bundle: Path, tmp_path: Path) -> None:
    config = config_for(onnx_bundle, postprocess={"threshold": 0.3, "top_k": 2})
    serving = load_serving_model(config)
    try:
        assert serving.model.info["name"] == "colours"
        post = serving.postprocessor.config
        assert (post.threshold, post.top_k, post.debounce) == (0.3, 2, STREAM_DEBOUNCE)
        assert post.activation == "none"  # LoadedModel.infer has decoded the scores already
    finally:
        serving.close()
    # Another model in place of [model] path, as an update slot is: same settings on it.
    other = write_onnx_bundle(tmp_path / "slot-b", thresholds={"default": 0.5, "per_class": {}})
    swapped = load_serving_model(config_for(onnx_bundle), path=other, stills=True)
    try:
        assert swapped.model.info["path"] == str(other)
        assert swapped.postprocessor.config.threshold == 0.5  # the slot's bundle threshold
        assert swapped.postprocessor.config.debounce == STILLS_DEBOUNCE
    finally:
        swapped.close()


def test_a_refused_postprocessor_closes_the_model(
    onnx_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[object] = []
    original = load_model

    def spy(*args: object, **kwargs: object) -> object:
        model = original(*args, **kwargs)  # type: ignore[arg-type]
        real_close = model.close
        model.close = lambda: (closed.append(model), real_close())  # type: ignore[method-assign]
        return model

    monkeypatch.setattr("edge_runtime.serving.load_model", spy)
    with pytest.raises(ConfigError, match="cat"):
        load_serving_model(config_for(onnx_bundle, postprocess={"allow": ["cat"]}))
    assert len(closed) == 1


def test_postprocessor_for_keeps_the_model(onnx_bundle: Path) -> None:
    with load_model(onnx_bundle) as model:
        post = postprocessor_for(model, PostprocessSection(threshold=0.8))
        assert post.config.threshold == 0.8 and post.labels == ["red", "green", "blue"]


def test_debounce_follows_the_source(onnx_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    stream = build_pipeline(config_for(onnx_bundle, source={"uri": "synthetic:banknotes"}))
    stills = build_pipeline(config_for(onnx_bundle, source={"uri": str(folder)}))
    fixed = build_pipeline(
        config_for(onnx_bundle, source={"uri": str(folder)}, postprocess={"debounce": 3})
    )
    try:
        assert stream.postprocessor.config.debounce == STREAM_DEBOUNCE
        assert stills.postprocessor.config.debounce == STILLS_DEBOUNCE
        assert fixed.postprocessor.config.debounce == 3
    finally:
        for pipeline in (stream, stills, fixed):
            pipeline.model.close()
