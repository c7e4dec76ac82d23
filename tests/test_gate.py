"""The accuracy gate: the exact binomial tail, and decisions on constructed predictions."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from exporter.errors import ExportError
from exporter.export.gate import (
    GateOptions,
    binomial_upper_tail,
    fewest_significant,
    gate_message,
    judge,
    mcnemar_p_value,
)

SIGNS = [f"sign-{i}" for i in range(14)]


def exact_tail(k: int, n: int, p: Fraction) -> Fraction:
    """P(X >= k) for X ~ Binomial(n, p), in exact rational arithmetic (the test's oracle)."""
    return sum(
        (Fraction(math.comb(n, i)) * p**i * (1 - p) ** (n - i) for i in range(max(k, 0), n + 1)),
        Fraction(0),
    )


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [(0, 10, "1/2"), (8, 10, "1/2"), (5, 5, "1/2"), (1, 7, "3/10"), (3, 20, "1/10"),
     (60, 100, "1/2"), (520, 1000, "1/2"), (900, 1000, "1/2"), (40, 60, "1/3")],
)  # fmt: skip
def test_binomial_tail_matches_exact_arithmetic(k: int, n: int, p: str) -> None:
    exact = float(exact_tail(k, n, Fraction(p)))
    assert binomial_upper_tail(k, n, float(Fraction(p))) == pytest.approx(exact, rel=1e-9)


def test_binomial_tail_known_values_and_edges() -> None:
    assert binomial_upper_tail(8, 10) == pytest.approx(56 / 1024, rel=1e-12)
    assert binomial_upper_tail(5, 5) == pytest.approx(1 / 32, rel=1e-12)
    assert binomial_upper_tail(1, 4, 0.25) == pytest.approx(1 - 0.75**4, rel=1e-12)
    assert binomial_upper_tail(0, 0) == 1.0 and binomial_upper_tail(-3, 5) == 1.0
    assert binomial_upper_tail(6, 5) == 0.0
    # Far in the tail the log-space sum keeps the magnitude (1 - cdf would give 0).
    assert binomial_upper_tail(100_000, 100_000) == pytest.approx(math.exp(-100_000 * math.log(2)))
    with pytest.raises(ValueError, match="p must be"):
        binomial_upper_tail(1, 3, 1.0)
    with pytest.raises(ValueError, match="negative"):
        binomial_upper_tail(1, -1)


def test_mcnemar_and_the_fewest_significant_images() -> None:
    assert mcnemar_p_value(1, 0) == pytest.approx(0.5)
    assert mcnemar_p_value(0, 0) == 1.0
    assert mcnemar_p_value(4, 0) == pytest.approx(1 / 16)  # not significant at 95%
    assert mcnemar_p_value(5, 0) == pytest.approx(1 / 32)  # significant
    assert mcnemar_p_value(10, 10) > 0.5
    assert fewest_significant(0.05) == 5
    assert fewest_significant(0.01) == 7
    assert fewest_significant(0.05 / 14) == 9
    assert fewest_significant(0.0625) == 5  # 0.5**4 is not below 0.0625


def _signs(float_wrong_every: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """84 images, 6 per class; float gets all but every ``float_wrong_every``-th right."""
    truth = np.repeat(np.arange(14), 6)
    predictions = truth.copy()
    predictions[::float_wrong_every] = (predictions[::float_wrong_every] + 1) % 14
    return truth, predictions


def test_one_image_changed_on_84_passes_with_its_statistics() -> None:
    truth, floats = _signs()
    artifact = floats.copy()
    artifact[1] = (artifact[1] + 3) % 14  # one image float got right turns wrong
    decision = judge("tflite-int8", "model-int8.tflite", artifact, floats, truth, SIGNS)
    assert decision.passed and decision.decision == "pass"
    assert (decision.lost, decision.gained, decision.images) == (1, 0, 84)
    assert decision.drop_points == pytest.approx(100 / 84)  # 1.2 points: over the 1-point limit
    assert decision.p_value == pytest.approx(0.5)
    # Above the limit but not significant: passed, and it says so.
    assert any("not significant" in w for w in decision.warnings)
    record = decision.to_json()
    assert record["decision"] == "pass" and record["lost"] == 1 and record["gained"] == 0
    assert record["p_value"] == 0.5 and record["agree"] == 83
    assert record["min_detectable_drop_points"] == pytest.approx(5 / 84 * 100, abs=1e-3)


def test_a_significant_drop_fails_with_the_counts_the_p_value_and_the_worst_classes() -> None:
    truth, floats = _signs()
    artifact = floats.copy()
    right = np.flatnonzero(floats == truth)
    lost = right[[0, 1, 2, 3, 4, 6, 7, 8]]  # eight images float got right
    artifact[lost] = (truth[lost] + 5) % 14
    decision = judge("tflite-int8", "model-int8.tflite", artifact, floats, truth, SIGNS)
    assert not decision.passed
    assert (decision.lost, decision.gained) == (8, 0)
    assert decision.p_value == pytest.approx(0.5**8)
    message = gate_message([decision], "refused")
    assert "\n" not in message
    assert message.startswith("tflite-int8 (model-int8.tflite) fails the accuracy gate: ")
    assert "significant drop of 9.5 points" in message
    assert "8 turned wrong, 0 turned right" in message and "p=0.0039" in message
    assert "worst classes: sign-0 -" in message
    assert "Nothing was written" in message and "--allow-accuracy-drop" in message
    # A looser limit lets the same drop through.
    assert judge("k", "f", artifact, floats, truth, SIGNS, GateOptions(max_accuracy_drop=10)).passed


def test_agreement_below_the_floor_fails_even_without_a_drop() -> None:
    truth, floats = _signs()
    artifact = floats.copy()
    right = np.flatnonzero(floats == truth)[:10]
    wrong = np.flatnonzero(floats != truth)[:9]
    artifact[right] = (truth[right] + 1) % 14
    artifact[wrong] = truth[wrong]
    decision = judge("onnx-int8", "model-int8.onnx", artifact, floats, truth, SIGNS)
    assert decision.drop_points == pytest.approx(100 / 84) and decision.p_value > 0.4
    assert decision.agreement == pytest.approx(65 / 84)
    assert not decision.passed
    assert decision.reasons == ("agreement with float 77.4% is below the floor 90%",)
    assert judge("k", "f", artifact, floats, truth, SIGNS, GateOptions(min_agreement=0.7)).passed


def test_a_class_that_collapses_fails_although_the_total_does_not_drop() -> None:
    labels = ["stop", "yield", "go"]
    truth = np.concatenate([np.zeros(12, int), np.ones(144, int), np.full(144, 2)])
    floats = truth.copy()
    floats[12:24] = 2  # float gets 12 "yield" images wrong
    artifact = floats.copy()
    artifact[:12] = 1  # every "stop" image turns wrong...
    artifact[12:24] = 1  # ...while the 12 "yield" images turn right: no drop overall
    decision = judge("tflite-int8", "model-int8.tflite", artifact, floats, truth, labels)
    assert decision.drop_points == 0 and decision.agreement == pytest.approx(276 / 300)
    (collapsed,) = [c for c in decision.classes if c.collapsed]
    assert collapsed.label == "stop" and (collapsed.float_correct, collapsed.artifact_correct) == (
        12,
        0,
    )
    assert collapsed.adjusted_p_value == pytest.approx(3 * 0.5**12)  # Bonferroni over 3 classes
    assert decision.reasons == ("collapsed class stop (12/12 -> 0/12, p=0.00073)",)
    assert decision.to_json()["classes"]["stop"]["collapsed"] is True


def test_a_class_too_small_to_tell_does_not_collapse() -> None:
    labels = ["stop", "yield", "go"]
    truth = np.concatenate([np.zeros(3, int), np.ones(100, int), np.full(100, 2)])
    floats = truth.copy()
    artifact = floats.copy()
    artifact[:3] = 1  # all three "stop" images wrong: 0.5**3 * 3 classes is not significant
    decision = judge("tflite-int8", "model-int8.tflite", artifact, floats, truth, labels)
    stop = decision.classes[0]
    assert stop.too_few and not stop.collapsed
    assert decision.agreement == pytest.approx(200 / 203) and decision.passed


def test_too_few_images_to_tell_anything_is_a_warning() -> None:
    truth = np.array([0, 1, 2, 0])
    decision = judge("tflite-int8", "model-int8.tflite", np.array([0, 1, 2, 0]), truth, truth,
                     ["a", "b", "c"])  # fmt: skip
    assert decision.passed
    (warning,) = decision.warnings
    assert "4 images (4 right in float) are too few to tell anything" in warning
    assert decision.to_json()["warnings"] == [warning]


def test_messages_say_what_happened_to_the_bundle() -> None:
    truth, floats = _signs()
    artifact = (floats + 1) % 14
    decision = judge("tflite-int8", "model-int8.tflite", artifact, floats, truth, SIGNS,
                     GateOptions(allow_accuracy_drop=True))  # fmt: skip
    assert decision.decision == "allowed"
    bundled = gate_message([decision], "bundled")
    assert "Bundled anyway" in bundled and "Nothing was written" not in bundled
    checked = gate_message([decision], "checked")
    assert "Nothing was written" not in checked and "--gate-confidence 0.95" in checked


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (GateOptions(max_accuracy_drop=-1), "--max-accuracy-drop must be between 0 and 100"),
        (GateOptions(max_accuracy_drop=float("nan")), "--max-accuracy-drop"),
        (GateOptions(confidence=1.0), "--gate-confidence must be at least 0.5 and below 1"),
        (GateOptions(confidence=0.2), "--gate-confidence"),
        (GateOptions(min_agreement=1.5), "--min-agreement must be between 0 and 1"),
    ],
)
def test_bad_gate_options_are_refused(options: GateOptions, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        options.check()
