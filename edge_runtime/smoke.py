"""The smoke test of a bundle: run its ``samples/`` and compare the labels.

A bundle carries a few images with the label its model gives them (chosen by the exporter among
held-out images that every artifact classified correctly with a clear margin). Getting them all
right again shows that this runtime, on this machine, loads the artifact, prepares frames and
decodes scores as the exporter verified. The exporter's ``verify`` runs it before a bundle ships;
the device runs it after every over-the-air install, before the new model may serve.

No TensorFlow: the model runs through :func:`edge_runtime.model.load_model`, as it would serve.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.errors import BundleError

if TYPE_CHECKING:
    from edge_runtime.backends import BackendOptions
    from edge_runtime.model import LoadedModel


@dataclass(frozen=True)
class SampleOutcome:
    """One sample: the label it should get, the label it got, and every class's score."""

    path: str
    expected: str
    predicted: str
    score: float
    scores: tuple[float, ...]

    @property
    def ok(self) -> bool:
        return self.predicted == self.expected


@dataclass(frozen=True)
class SmokeResult:
    """The smoke test of one artifact of a bundle."""

    name: str
    version: int
    artifact: str
    backend: str
    outcomes: tuple[SampleOutcome, ...]

    @property
    def passed(self) -> bool:
        """Every sample got its label (a bundle without samples never passes)."""
        return bool(self.outcomes) and all(o.ok for o in self.outcomes)

    @property
    def failures(self) -> tuple[SampleOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.ok)

    def summary(self) -> str:
        """One line: how many samples were right, and the first wrong ones."""
        head = f"{self.name} v{self.version} {self.artifact} on {self.backend}"
        right = len(self.outcomes) - len(self.failures)
        if self.passed:
            return f"{head}: all {right} samples right"
        wrong = ", ".join(
            f"{Path(o.path).name} {o.expected} -> {o.predicted} ({o.score:.2f})"
            for o in self.failures[:3]
        )
        more = f" and {len(self.failures) - 3} more" if len(self.failures) > 3 else ""
        return f"{head}: {right} of {len(self.outcomes)} samples right; wrong: {wrong}{more}"

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "backend": self.backend,
            "passed": self.passed,
            "samples": len(self.outcomes),
            "wrong": [
                {"path": o.path, "expected": o.expected, "predicted": o.predicted, "score": o.score}
                for o in self.failures
            ],
        }


def run_samples(
    model: LoadedModel, samples: Sequence[tuple[str, Path, str]]
) -> tuple[SampleOutcome, ...]:
    """Classify each ``(name, file, expected label)`` with a loaded model.

    Raises:
        PreprocessError: a sample cannot be read or prepared.
        BackendError: the inference failed.
    """
    from edge_runtime.imageio import read_image

    outcomes = []
    for name, path, expected in samples:
        probabilities = model.infer(model.prepare(read_image(path)))
        best = int(probabilities.argmax())
        outcomes.append(
            SampleOutcome(
                path=name,
                expected=expected,
                predicted=model.labels[best],
                score=round(float(probabilities[best]), 6),
                scores=tuple(float(p) for p in probabilities),
            )
        )
    return tuple(outcomes)


def smoke_test(
    bundle: str | os.PathLike[str],
    *,
    artifact: str | None = None,
    precision: str | None = None,
    backend: str = "auto",
    options: BackendOptions | None = None,
    profile: Any = None,
) -> SmokeResult:
    """Load a bundle's model (the artifact this device would choose, or the one named) and run
    its ``samples/``.

    Returns the result whether or not every sample was right: check ``passed``.

    Raises:
        BundleError: an invalid bundle, one without samples, or no artifact matching the choice.
        ModelError, BackendError, MissingDependencyError, ConfigError: the model cannot be loaded
            or run here (see :func:`edge_runtime.model.load_model`).
        PreprocessError: a sample image cannot be read.
    """
    from edge_runtime.bundle import load_bundle
    from edge_runtime.model import load_model

    with load_bundle(bundle) as opened:
        manifest = opened.manifest
        if not manifest.samples:
            raise BundleError(
                f"bundle {manifest.name} v{manifest.version} has no samples/: nothing to "
                "smoke-test it with"
            )
        samples = [(s.path, opened.path_of(s.path), s.label) for s in manifest.samples]
        with load_model(
            opened.root,
            artifact=artifact,
            precision=precision,
            backend=backend,
            options=options,
            profile=profile,
        ) as model:
            outcomes = run_samples(model, samples)
            chosen = model.artifact.path if model.artifact is not None else str(artifact)
            return SmokeResult(
                name=manifest.name,
                version=manifest.version,
                artifact=chosen,
                backend=str(model.backend.name),
                outcomes=outcomes,
            )


__all__ = ["SampleOutcome", "SmokeResult", "run_samples", "smoke_test"]
