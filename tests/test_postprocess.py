"""Postprocessing rules, one by one, then combined in the Postprocessor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_runtime.errors import ConfigError
from edge_runtime.postprocess import (
    CategoryFilter,
    ConfidenceThresholds,
    Debouncer,
    EmaSmoother,
    MajorityVote,
    PostprocessConfig,
    Postprocessor,
    ScoreDecoder,
    dequantize,
    looks_like_probabilities,
    softmax,
    top_k,
)
from edge_runtime.types import UNKNOWN, TensorSpec

LABELS = ["cat", "dog", "fox", "owl"]

# -- dequantize ----------------------------------------------------------


def test_dequantize_uint8_with_zero_point_255_does_not_wrap() -> None:
    row = np.array([0, 1, 254, 255], dtype=np.uint8)
    out = dequantize(row, 0.5, 255)
    # Done in uint8, 0 - 255 would wrap to 1 and give +0.5 instead of -127.5.
    np.testing.assert_array_equal(out, [-127.5, -127.0, -0.5, 0.0])
    assert out.dtype == np.float32


def test_dequantize_int8_extremes() -> None:
    row = np.array([-128, -1, 0, 127], dtype=np.int8)
    np.testing.assert_array_equal(dequantize(row, 1.0, -128), [0, 127, 128, 255])
    # zero point 127 with -128: the difference (-255) does not fit int8.
    np.testing.assert_array_equal(dequantize(row, 0.25, 127), [-63.75, -32.0, -31.75, 0.0])


def test_dequantize_writes_into_out_and_passes_floats_through() -> None:
    out = np.empty(3, np.float32)
    result = dequantize(np.array([10, 20, 30], np.uint8), 0.1, 10, out=out)
    assert result is out
    np.testing.assert_allclose(out, [0.0, 1.0, 2.0], atol=1e-6)
    floats = np.array([0.25, -3.0, 7.5], np.float64)
    np.testing.assert_array_equal(dequantize(floats, 0.1, 10), floats)  # float rows: no quant
    np.testing.assert_array_equal(dequantize(np.array([3], np.uint8), 0.0, 0), [3.0])


@settings(max_examples=200, deadline=None)
@given(
    row=hnp.arrays(
        st.sampled_from([np.uint8, np.int8, np.int16, np.int32]),
        st.integers(1, 16),
    ),
    scale=st.floats(1e-6, 10.0),
    zero_point=st.integers(-(2**31), 2**31 - 1),
)
def test_dequantize_never_overflows(row: np.ndarray, scale: float, zero_point: int) -> None:
    exact = [scale * (int(q) - zero_point) for q in row]  # Python ints cannot overflow
    np.testing.assert_allclose(dequantize(row, scale, zero_point), exact, rtol=1e-6)


# -- softmax and activation ----------------------------------------------------------


def test_softmax_is_stable_for_large_logits() -> None:
    probabilities = softmax(np.array([1000.0, 1001.0, 999.0], np.float32))
    assert np.all(np.isfinite(probabilities))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    assert int(np.argmax(probabilities)) == 1


def test_probability_detection() -> None:
    assert looks_like_probabilities(np.array([0.1, 0.7, 0.2], np.float32))
    # uint8 probabilities dequantized: each class rounded down, the sum a little below 1.
    assert looks_like_probabilities(np.array([0.5, 0.3, 0.15], np.float32))
    assert not looks_like_probabilities(np.array([2.0, -1.0, 0.5], np.float32))  # logits
    assert not looks_like_probabilities(np.array([0.9, 0.9, 0.9], np.float32))  # sigmoid-like
    assert not looks_like_probabilities(np.array([0.1, np.nan], np.float32))


def test_decoder_auto_applies_softmax_to_logits_only() -> None:
    decoder = ScoreDecoder(3)
    logits = np.array([2.0, 1.0, -1.0], np.float32)
    np.testing.assert_allclose(decoder(logits), softmax(logits), rtol=1e-6)
    assert decoder.last_activation == "softmax"
    probabilities = np.array([0.2, 0.5, 0.3], np.float32)
    np.testing.assert_array_equal(decoder(probabilities), probabilities)
    assert decoder.last_activation == "none"


def test_decoder_forced_activation_and_quantized_rows() -> None:
    forced = ScoreDecoder(3, activation="softmax")
    row = np.array([0.2, 0.5, 0.3], np.float32)
    np.testing.assert_allclose(forced(row), softmax(row), rtol=1e-6)
    raw = ScoreDecoder(3, activation="none")
    np.testing.assert_array_equal(raw(np.array([5.0, -2.0, 0.0], np.float32)), [5.0, -2.0, 0.0])
    quantized = ScoreDecoder(3, scale=1 / 256, zero_point=0)
    np.testing.assert_array_equal(quantized(np.array([128, 64, 64], np.uint8)), [0.5, 0.25, 0.25])
    with pytest.raises(ConfigError, match="activation"):
        ScoreDecoder(3, activation="sigmoid")


# -- top-k ----------------------------------------------------------------------------------------


def test_top_k_orders_ties_by_index() -> None:
    scores = np.array([0.1, 0.3, 0.3, 0.05, 0.3, 0.25], np.float32)
    np.testing.assert_array_equal(top_k(scores, 4), [1, 2, 4, 5])
    np.testing.assert_array_equal(top_k(scores, 2), [1, 2])
    np.testing.assert_array_equal(top_k(scores, 10), [1, 2, 4, 5, 0, 3])
    assert top_k(scores, 0).size == 0


def test_top_k_puts_nan_last_and_handles_integers() -> None:
    scores = np.array([np.nan, 0.2, 0.9], np.float32)
    np.testing.assert_array_equal(top_k(scores, 3), [2, 1, 0])
    np.testing.assert_array_equal(top_k(np.array([3, 200, 7], np.uint8), 2), [1, 2])


@settings(max_examples=200, deadline=None)
@given(
    scores=hnp.arrays(
        np.float32,
        st.integers(1, 40),
        elements=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, -1.0, 3.5]),
    ),
    k=st.integers(0, 45),
)
def test_top_k_matches_a_full_stable_sort(scores: np.ndarray, k: int) -> None:
    chosen = top_k(scores, k)
    assert len(chosen) == min(k, scores.size)
    assert np.all(np.diff(scores[chosen]) <= 0), "best first"
    expected = sorted(range(scores.size), key=lambda i: (-float(scores[i]), i))[:k]
    assert chosen.tolist() == expected


# -- thresholds and categories ----------------------------------------------------------


def test_global_threshold() -> None:
    thresholds = ConfidenceThresholds(0.6)
    assert thresholds.apply("cat", 0.61) == "cat"
    assert thresholds.apply("cat", 0.6) == "cat"
    assert thresholds.apply("cat", 0.59) == UNKNOWN


def test_per_class_threshold_overrides_the_default() -> None:
    thresholds = ConfidenceThresholds(0.5, {"fox": 0.9}, labels=LABELS)
    assert thresholds.apply("dog", 0.55) == "dog"
    assert thresholds.apply("fox", 0.85) == UNKNOWN
    assert thresholds.apply("fox", 0.95) == "fox"


def test_threshold_errors() -> None:
    with pytest.raises(ConfigError, match="0..1"):
        ConfidenceThresholds(1.5)
    with pytest.raises(ConfigError, match="wolf"):
        ConfidenceThresholds(0.5, {"wolf": 0.9}, labels=LABELS)


def test_allow_and_deny_lists() -> None:
    scores = np.array([0.4, 0.3, 0.2, 0.1], np.float32)
    allow = CategoryFilter(LABELS, allow=["dog", "owl"])
    assert allow.mask.tolist() == [False, True, False, True]
    filtered = allow.apply(scores)
    assert np.isneginf(filtered[0]) and filtered[1] == pytest.approx(0.3)
    deny = CategoryFilter(LABELS, deny=["cat"])
    assert deny.mask.tolist() == [False, True, True, True]
    both = CategoryFilter(LABELS, allow=["cat", "dog"], deny=["cat"])
    assert both.mask.tolist() == [False, True, False, False]
    with pytest.raises(ConfigError, match="wolf"):
        CategoryFilter(LABELS, deny=["wolf"])
    with pytest.raises(ConfigError, match="no class"):
        CategoryFilter(LABELS, allow=["cat"], deny=["cat"])


# -- temporal ----------------------------------------------------------


def test_ema_smoothing() -> None:
    ema = EmaSmoother(3)  # alpha = 0.5
    np.testing.assert_allclose(ema.update(np.array([1.0, 0.0], np.float32)), [1.0, 0.0])
    np.testing.assert_allclose(ema.update(np.array([0.0, 1.0], np.float32)), [0.5, 0.5])
    np.testing.assert_allclose(ema.update(np.array([0.0, 1.0], np.float32)), [0.25, 0.75])
    ema.reset()
    np.testing.assert_allclose(ema.update(np.array([0.0, 1.0], np.float32)), [0.0, 1.0])
    assert EmaSmoother(1).alpha == 1.0
    with pytest.raises(ConfigError):
        EmaSmoother(0)


def test_majority_vote() -> None:
    vote = MajorityVote(3)
    assert vote.update("cat", 0.9) == ("cat", pytest.approx(0.9))
    # One each: the tie goes to the most recent.
    assert vote.update("dog", 0.6)[0] == "dog"
    assert vote.update("cat", 0.7) == ("cat", pytest.approx(0.8))
    # Window is 3: [dog, cat, dog] -> dog.
    assert vote.update("dog", 0.8) == ("dog", pytest.approx(0.7))
    vote.reset()
    assert vote.update("owl", 0.5)[0] == "owl"


def test_debounce_fires_when_a_label_has_held_k_frames() -> None:
    debounce = Debouncer(3)
    labels = ["cat", "cat", "cat", "cat", "dog", "cat", "dog", "dog", "dog", "dog", "cat"]
    events = [debounce.update(label) for label in labels]
    # cat fires on its 3rd frame; the dog blip does not end the cat stretch; dog fires on frame 8.
    assert [i for i, fired in enumerate(events) if fired] == [2, 8]
    assert debounce.current == "dog"


def test_debounce_unknown_ends_a_stretch_silently() -> None:
    debounce = Debouncer(2)
    labels = ["cat", "cat", UNKNOWN, UNKNOWN, "cat", "cat"]
    events = [debounce.update(label) for label in labels]
    assert [i for i, fired in enumerate(events) if fired] == [1, 5]
    announcing = Debouncer(1, announce_unknown=True)
    assert [announcing.update(x) for x in ["cat", UNKNOWN, UNKNOWN]] == [True, True, False]


def test_debounce_of_one_frame_fires_on_every_change() -> None:
    debounce = Debouncer(1)
    assert [debounce.update(x) for x in ["a", "a", "b", "a"]] == [True, False, True, True]


# -- the postprocessor ----------------------------------------------------------


def probabilities(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


def test_postprocessor_quantized_row_to_prediction() -> None:
    output = TensorSpec("scores", (1, 4), "uint8", scale=1 / 256, zero_point=0)
    post = Postprocessor.for_output(LABELS, output, PostprocessConfig(top_k=2))
    prediction = post.process(
        np.array([10, 200, 40, 6], np.uint8),
        frame_index=7,
        timestamp=1.5,
        source="camera:0",
        truth="dog",
        latency_ms={"preprocess": 1.25},
    )
    assert prediction.label == "dog"
    assert prediction.score == pytest.approx(200 / 256)
    assert [(c.index, c.label) for c in prediction.top] == [(1, "dog"), (2, "fox")]
    assert prediction.top[1].score == pytest.approx(40 / 256)
    assert (prediction.frame_index, prediction.timestamp, prediction.source) == (7, 1.5, "camera:0")
    assert prediction.truth == "dog" and prediction.latency_ms == {"preprocess": 1.25}
    assert prediction.event


def test_postprocessor_softmax_on_logits() -> None:
    post = Postprocessor(LABELS)
    prediction = post.process(probabilities(0.0, 3.0, 1.0, -2.0))
    assert prediction.label == "dog"
    assert sum(c.score for c in post.top(post.probabilities(probabilities(0, 3, 1, -2)), 4)) == (
        pytest.approx(1.0, abs=1e-6)
    )


def test_postprocessor_threshold_gives_unknown() -> None:
    config = PostprocessConfig(threshold=0.5, per_class_thresholds={"fox": 0.2})
    post = Postprocessor(LABELS, config)
    assert post.process(probabilities(0.4, 0.3, 0.2, 0.1)).label == UNKNOWN
    low_fox = post.process(probabilities(0.2, 0.25, 0.3, 0.25))
    assert (low_fox.label, low_fox.score) == ("fox", pytest.approx(0.3))


def test_postprocessor_deny_list_changes_the_winner() -> None:
    post = Postprocessor(LABELS, PostprocessConfig(deny=("cat",), top_k=4))
    prediction = post.process(probabilities(0.7, 0.2, 0.05, 0.05))
    assert prediction.label == "dog"
    assert [c.label for c in prediction.top] == ["dog", "fox", "owl"]


def test_postprocessor_ema_smooths_the_decision_not_the_top() -> None:
    post = Postprocessor(LABELS, PostprocessConfig(smoothing="ema", window=3))
    post.process(probabilities(0.9, 0.1, 0.0, 0.0))
    second = post.process(probabilities(0.2, 0.8, 0.0, 0.0))
    assert second.label == "cat"  # (0.9 + 0.2) / 2 beats (0.1 + 0.8) / 2
    assert second.score == pytest.approx(0.55)
    assert second.top[0].label == "dog", "top is this frame's own ranking"


def test_postprocessor_majority_and_debounce() -> None:
    config = PostprocessConfig(smoothing="majority", window=3, debounce=2)
    post = Postprocessor(LABELS, config)
    rows = [
        probabilities(0.9, 0.1, 0, 0),
        probabilities(0.9, 0.1, 0, 0),
        probabilities(0.1, 0.9, 0, 0),
        probabilities(0.1, 0.9, 0, 0),
        probabilities(0.1, 0.9, 0, 0),
    ]
    predictions = [post.process(row, frame_index=i) for i, row in enumerate(rows)]
    assert [p.label for p in predictions] == ["cat", "cat", "cat", "dog", "dog"]
    assert [p.event for p in predictions] == [False, True, False, False, True]
    post.reset()
    assert not post.process(rows[0]).event  # debounce starts over after a reset


def test_postprocessor_rejects_a_row_of_the_wrong_size() -> None:
    with pytest.raises(ConfigError, match="5 scores but there are 4 labels"):
        Postprocessor(LABELS).process(np.zeros(5, np.float32))


@pytest.mark.parametrize(
    "settings_",
    [
        {"top_k": 0},
        {"window": 0},
        {"debounce": -1},
        {"smoothing": "median"},
        {"activation": "relu"},
        {"threshold": 2.0},
        {"allow": ("wolf",)},
    ],
)
def test_invalid_settings_are_config_errors(settings_: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Postprocessor(LABELS, PostprocessConfig(**settings_))  # type: ignore[arg-type]
