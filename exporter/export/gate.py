"""The accuracy gate: does an exported artifact classify worse than the float model?

Pure: numpy arrays of predictions in, a frozen :class:`GateDecision` out. No files, no models.

The gate compares an artifact with the float model **image by image**. Of the images where the two
disagree about being right, ``lost`` are the ones float gets right and the artifact wrong, and
``gained`` the reverse (the discordant pairs; the images both get right or both get wrong say
nothing about which model is better). If the artifact were as accurate as float, each discordant
image would fall either way with probability 1/2, so ``lost`` would follow Binomial(lost + gained,
1/2). The exact one-sided McNemar test asks how likely ``lost`` or more is under that assumption:
that is the p-value. An artifact fails the gate when

1. its drop in top-1 is larger than ``max_drop_points`` **and** significant (p-value below
   ``1 - confidence``): one image on 84 is a 1.2-point drop with p = 0.5, noise, not a loss; or
2. its top-1 agrees with float's on fewer than ``min_agreement`` of the images (a model that is
   right as often as float but on other images is a different model, whatever its accuracy); or
3. a class collapses: it keeps less than half of float's accuracy on that class, significantly
   (the same exact test on that class's images, Bonferroni-corrected for the number of classes).

With too few images the test cannot reject anything (even losing every image float gets right
would not be significant); the decision then says so as a warning instead of pretending to judge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from exporter.errors import ExportError

DEFAULT_MAX_ACCURACY_DROP = 1.0
DEFAULT_GATE_CONFIDENCE = 0.95
DEFAULT_MIN_AGREEMENT = 0.9
#: a class "collapses" when it keeps less than this fraction of float's accuracy on it
COLLAPSE_FRACTION = 0.5


def binomial_upper_tail(k: int, n: int, p: float = 0.5) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``, exact up to float rounding.

    Summed in log space from the terms themselves (``lgamma``), so it neither overflows for large
    ``n`` nor loses the tail to cancellation as ``1 - cdf`` would.

    Raises:
        ValueError: ``n`` is negative or ``p`` is not strictly between 0 and 1.
    """
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be strictly between 0 and 1, got {p}")
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    logs = [
        log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k, n + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def mcnemar_p_value(lost: int, gained: int) -> float:
    """One-sided exact McNemar p-value that ``lost`` images or more out of ``lost + gained``
    discordant ones went against the artifact, if the two models were equally accurate."""
    return binomial_upper_tail(lost, lost + gained, 0.5)


def fewest_significant(alpha: float) -> int:
    """The fewest one-way discordant images (``lost`` with ``gained == 0``) that are significant
    at level ``alpha``: the smallest k with 0.5**k < alpha (5 at the default 95% confidence).

    Raises:
        ValueError: ``alpha`` is not in (0, 1].
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    count = 1
    while 0.5**count >= alpha:
        count += 1
    return count


@dataclass(frozen=True)
class GateOptions:
    """The gate's settings (``--max-accuracy-drop``, ``--gate-confidence``, ``--min-agreement``,
    ``--allow-accuracy-drop``)."""

    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    confidence: float = DEFAULT_GATE_CONFIDENCE
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    allow_accuracy_drop: bool = False

    @property
    def alpha(self) -> float:
        """The false-alarm rate the gate accepts: ``1 - confidence``."""
        return 1.0 - self.confidence

    def check(self) -> GateOptions:
        """Return self when every setting is usable.

        Raises:
            ExportError: a setting out of range (names the option).
        """
        if not (math.isfinite(self.max_accuracy_drop) and 0 <= self.max_accuracy_drop <= 100):
            raise ExportError(
                "--max-accuracy-drop must be between 0 and 100 points, got "
                f"{self.max_accuracy_drop}"
            )
        if not 0.5 <= self.confidence < 1.0:
            raise ExportError(
                f"--gate-confidence must be at least 0.5 and below 1, got {self.confidence}"
            )
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ExportError(f"--min-agreement must be between 0 and 1, got {self.min_agreement}")
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "max_accuracy_drop_points": self.max_accuracy_drop,
            "confidence": self.confidence,
            "min_agreement": self.min_agreement,
            "allow_accuracy_drop": self.allow_accuracy_drop,
        }


@dataclass(frozen=True)
class ClassChange:
    """One class: float's and the artifact's correct images, and the test on its pairs."""

    label: str
    images: int
    float_correct: int
    artifact_correct: int
    lost: int
    gained: int
    p_value: float
    #: ``p_value`` times the number of classes tested (Bonferroni), at most 1
    adjusted_p_value: float
    collapsed: bool
    #: even losing every image float gets right would not be significant for this class
    too_few: bool

    @property
    def change_points(self) -> float:
        """Change of this class's top-1 against float, in points."""
        return (self.artifact_correct - self.float_correct) / self.images * 100.0

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "float_correct": self.float_correct,
            "artifact_correct": self.artifact_correct,
            "lost": self.lost,
            "gained": self.gained,
            "p_value_adjusted": _round(self.adjusted_p_value),
            "collapsed": self.collapsed,
        }


@dataclass(frozen=True)
class GateDecision:
    """What the gate concluded for one artifact, and the statistics behind it."""

    key: str
    file: str
    images: int
    float_correct: int
    artifact_correct: int
    agree: int
    lost: int
    gained: int
    p_value: float
    options: GateOptions
    classes: tuple[ClassChange, ...] = ()
    #: why the artifact fails (empty: it passes)
    reasons: tuple[str, ...] = ()
    #: what the decision cannot tell (too few images, a drop too small to be significant)
    warnings: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def name(self) -> str:
        """``key (file)``, as messages name the artifact."""
        return f"{self.key} ({self.file})" if self.file else self.key

    @property
    def decision(self) -> str:
        """``pass``, ``fail`` or ``allowed`` (failed, bundled under --allow-accuracy-drop)."""
        if self.passed:
            return "pass"
        return "allowed" if self.options.allow_accuracy_drop else "fail"

    @property
    def float_accuracy(self) -> float:
        return self.float_correct / self.images if self.images else 0.0

    @property
    def accuracy(self) -> float:
        return self.artifact_correct / self.images if self.images else 0.0

    @property
    def agreement(self) -> float:
        return self.agree / self.images if self.images else 0.0

    @property
    def drop_points(self) -> float:
        """Top-1 points lost against float (negative: the artifact is better)."""
        return (self.lost - self.gained) / self.images * 100.0 if self.images else 0.0

    @property
    def min_detectable_drop_points(self) -> float:
        """The smallest drop the test can call significant on this many images (all of it one
        way), in points: below it, a drop cannot fail the gate whatever ``max_drop`` says."""
        if not self.images:
            return 100.0
        return fewest_significant(self.options.alpha) / self.images * 100.0

    def worst_classes(self, count: int = 3) -> list[ClassChange]:
        """The classes that lost most against float, worst first (only those that lost)."""
        ranked = sorted(self.classes, key=lambda c: (c.change_points, c.label))
        return [c for c in ranked[:count] if c.change_points < 0]

    def summary(self) -> str:
        """One line of figures: accuracies, images changed each way, p-value, agreement."""
        worst = ", ".join(f"{c.label} {c.change_points:+.1f}" for c in self.worst_classes())
        return (
            f"top-1 {self.accuracy:.1%} vs float {self.float_accuracy:.1%} on {self.images} "
            f"images; {self.lost} turned wrong, "
            f"{self.gained} turned right (one-sided exact McNemar p={_p_text(self.p_value)}); "
            f"agreement with float {self.agreement:.1%}"
            + (f"; worst classes: {worst}" if worst else "")
        )

    def to_json(self) -> dict[str, Any]:
        """The decision and its statistics, JSON-ready (what the manifest records)."""
        return {
            "artifact": self.file or self.key,
            "decision": self.decision,
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
            "images": self.images,
            "float_correct": self.float_correct,
            "artifact_correct": self.artifact_correct,
            "agree": self.agree,
            "lost": self.lost,
            "gained": self.gained,
            "drop_points": round(self.drop_points, 4),
            "p_value": _round(self.p_value),
            "min_detectable_drop_points": round(self.min_detectable_drop_points, 4),
            "classes": {c.label: c.to_json() for c in self.classes},
        }


def _round(value: float, digits: int = 6) -> float:
    # Tiny p-values keep their magnitude instead of rounding to 0.
    return float(f"{value:.{digits}g}")


def _p_text(value: float) -> str:
    return f"{value:.2g}"


def _class_changes(
    float_right: np.ndarray,
    artifact_right: np.ndarray,
    truth: np.ndarray,
    labels: Sequence[str],
    alpha: float,
) -> tuple[ClassChange, ...]:
    present = [k for k in range(len(labels)) if np.any(truth == k)]
    # Only classes float gets right at least once can collapse; they are the tests counted.
    tested = max(1, sum(1 for k in present if np.any(float_right[truth == k])))
    needed = fewest_significant(alpha / tested)
    changes = []
    for k in present:
        members = truth == k
        f, a = float_right[members], artifact_right[members]
        lost = int(np.sum(f & ~a))
        gained = int(np.sum(~f & a))
        p = mcnemar_p_value(lost, gained)
        adjusted = min(1.0, p * tested)
        float_correct, artifact_correct = int(f.sum()), int(a.sum())
        collapsed = (
            float_correct > 0
            and artifact_correct < COLLAPSE_FRACTION * float_correct
            and adjusted < alpha
        )
        changes.append(
            ClassChange(
                label=labels[k],
                images=int(members.sum()),
                float_correct=float_correct,
                artifact_correct=artifact_correct,
                lost=lost,
                gained=gained,
                p_value=p,
                adjusted_p_value=adjusted,
                collapsed=collapsed,
                too_few=float_correct < needed,
            )
        )
    return tuple(changes)


def judge(
    key: str,
    file: str,
    artifact_predictions: np.ndarray,
    float_predictions: np.ndarray,
    truth: np.ndarray,
    labels: Sequence[str],
    options: GateOptions = GateOptions(),
) -> GateDecision:
    """Judge one artifact's top-1 predictions against float's on the same images.

    ``artifact_predictions``, ``float_predictions`` and ``truth`` are class indices, one per image.

    Raises:
        ValueError: the three arrays differ in length, or ``options.confidence`` is not below 1
            (see :meth:`GateOptions.check` for the checks a command line gets).
    """
    artifact_predictions = np.asarray(artifact_predictions)
    float_predictions = np.asarray(float_predictions)
    truth = np.asarray(truth)
    if not len(artifact_predictions) == len(float_predictions) == len(truth):
        raise ValueError("predictions and truth must have one entry per image")
    alpha = options.alpha
    float_right = float_predictions == truth
    artifact_right = artifact_predictions == truth
    lost = int(np.sum(float_right & ~artifact_right))
    gained = int(np.sum(~float_right & artifact_right))
    images = len(truth)
    decision = GateDecision(
        key=key,
        file=file,
        images=images,
        float_correct=int(float_right.sum()),
        artifact_correct=int(artifact_right.sum()),
        agree=int(np.sum(artifact_predictions == float_predictions)),
        lost=lost,
        gained=gained,
        p_value=mcnemar_p_value(lost, gained),
        options=options,
        classes=_class_changes(float_right, artifact_right, truth, labels, alpha),
    )
    reasons = []
    if decision.drop_points > options.max_accuracy_drop + 1e-9 and decision.p_value < alpha:
        reasons.append(
            f"a significant drop of {decision.drop_points:.1f} points (limit "
            f"{options.max_accuracy_drop:g}, p={_p_text(decision.p_value)} < {alpha:.2g})"
        )
    if images and decision.agreement < options.min_agreement - 1e-12:
        reasons.append(
            f"agreement with float {decision.agreement:.1%} is below the floor "
            f"{options.min_agreement:.0%}"
        )
    collapsed = [c for c in decision.classes if c.collapsed]
    if collapsed:
        reasons.append(
            "collapsed class"
            + ("es " if len(collapsed) > 1 else " ")
            + ", ".join(
                f"{c.label} ({c.float_correct}/{c.images} -> {c.artifact_correct}/{c.images}, "
                f"p={_p_text(c.adjusted_p_value)})"
                for c in collapsed
            )
        )
    warnings = []
    if decision.float_correct < fewest_significant(alpha):
        warnings.append(
            f"{images} images ({decision.float_correct} right in float) are too few to tell "
            f"anything: even losing all of them would not be significant at "
            f"{options.confidence:.0%} confidence; verify on more images"
        )
    elif decision.drop_points > options.max_accuracy_drop + 1e-9 and not decision.p_value < alpha:
        warnings.append(
            f"the drop of {decision.drop_points:.1f} points is above the limit but not "
            f"significant on {images} images (p={_p_text(decision.p_value)}); more images "
            "would tell"
        )
    return replace(decision, reasons=tuple(reasons), warnings=tuple(warnings))


#: what happened to the bundle when the gate failed: ``refused`` (export wrote nothing),
#: ``bundled`` (export wrote it under --allow-accuracy-drop) or ``checked`` (verify)
Outcome = Literal["refused", "bundled", "checked"]


def gate_message(failures: Sequence[GateDecision], outcome: Outcome) -> str:
    """One line naming each failing artifact, why, and its statistics, ending with what
    happened to the bundle (never "nothing was written" when it was)."""
    text = "; ".join(
        f"{d.name} fails the accuracy gate: " + "; ".join(d.reasons) + f" [{d.summary()}]"
        for d in failures
    )
    if outcome == "bundled":
        return text + ". Bundled anyway (--allow-accuracy-drop)."
    if outcome == "checked":
        options = failures[0].options if failures else GateOptions()
        return (
            text + f". The gate: --max-accuracy-drop {options.max_accuracy_drop:g} points at "
            f"--gate-confidence {options.confidence:g}, --min-agreement {options.min_agreement:g}."
        )
    return (
        text + ". Nothing was written. Use more or more representative --calibration-images, "
        "drop that format from --formats, loosen --max-accuracy-drop or --min-agreement, or "
        "pass --allow-accuracy-drop to bundle it anyway."
    )
