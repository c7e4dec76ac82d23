"""Accuracy of the bundled default models on fresh synthetic data, through the device runtime.

Renders a test set with a seed that no recipe trains on, runs every artifact of each bundle
through ``edge_runtime`` (the same code the device runs, with the bundle's threshold), and reports:

- top-1 accuracy, counting ``unknown`` (below the bundle's threshold) as wrong;
- the ``unknown`` rate;
- for banknotes, genuine-vs-counterfeit accuracy on the images that hold a note (``empty`` trays
  excluded; ``unknown`` counted as wrong) and how many counterfeits were passed as genuine.

    python benchmarks/default_models.py                      # both bundles, 200 images a class
    python benchmarks/default_models.py --per-class 50 --json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge_runtime.model import load_model  # noqa: E402
from edge_runtime.scenes import class_names, render_sample  # noqa: E402
from edge_runtime.types import UNKNOWN  # noqa: E402

#: scenario of each bundled model
BUNDLES = {"traffic-signs": "traffic-signs", "banknotes": "banknotes"}
#: seeds no recipe trains on (the recipes use 1 and 2)
TEST_SEED = 20261128


@dataclass
class ArtifactScore:
    bundle: str
    artifact: str
    images: int
    top1: float
    unknown_rate: float
    genuine_vs_counterfeit: float | None = None
    counterfeits_passed: int | None = None
    notes: int | None = None


def render_test_set(scenario: str, per_class: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """``per_class`` fresh samples of every class, rendered at 160 px (the model resizes)."""
    images, labels = [], []
    for index, label in enumerate(class_names(scenario)):
        rng = np.random.default_rng([seed, index])
        for _ in range(per_class):
            images.append(render_sample(scenario, label, rng, 160))
            labels.append(label)
    return images, labels


def _is_counterfeit(label: str) -> bool:
    return label == "counterfeit"


def score_artifact(
    bundle: Path, artifact: str, images: list[np.ndarray], labels: list[str]
) -> ArtifactScore:
    """Classify every image with one artifact; thresholds from the bundle."""
    with load_model(bundle, artifact=artifact) as model:
        thresholds = model.postprocessor().thresholds  # the runtime's own rule, bundle values
        decided = []
        for image in images:
            best = model.classify(image, top_k=1)[0]
            decided.append(thresholds.apply(best.label, best.score))
    truth = np.array(labels)
    answer = np.array(decided)
    result = ArtifactScore(
        bundle=bundle.name,
        artifact=artifact,
        images=len(labels),
        top1=float((answer == truth).mean()),
        unknown_rate=float((answer == UNKNOWN).mean()),
    )
    if "counterfeit" in set(labels):
        notes = truth != "empty"
        truth_fake = np.array([_is_counterfeit(t) for t in truth[notes]])
        answers = answer[notes]
        known = answers != UNKNOWN
        said_fake = np.array([_is_counterfeit(a) for a in answers])
        correct = known & (said_fake == truth_fake) & (answers != "empty")
        result.notes = int(notes.sum())
        result.genuine_vs_counterfeit = float(correct.mean())
        result.counterfeits_passed = int((truth_fake & known & ~said_fake).sum())
    return result


def evaluate(models_dir: Path, per_class: int = 200, seed: int = TEST_SEED) -> list[ArtifactScore]:
    """Scores of every artifact of every bundled model found under ``models_dir``."""
    from edge_runtime.bundle import load_bundle

    scores = []
    for name, scenario in BUNDLES.items():
        bundle_dir = models_dir / name
        if not (bundle_dir / "manifest.json").exists():
            continue
        images, labels = render_test_set(scenario, per_class, seed)
        for artifact in load_bundle(bundle_dir).manifest.artifacts:
            scores.append(score_artifact(bundle_dir, artifact.path, images, labels))
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=TEST_SEED)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    scores = evaluate(args.models, args.per_class, args.seed)
    if args.json:
        print(json.dumps([asdict(s) for s in scores], indent=2))
        return 0
    print(f"fresh synthetic test set: {args.per_class} images a class, seed {args.seed}\n")
    print("| bundle | artifact | images | top-1 | unknown | genuine vs counterfeit |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for s in scores:
        gvc = (
            ""
            if s.genuine_vs_counterfeit is None
            else (
                f"{s.genuine_vs_counterfeit:.1%} ({s.counterfeits_passed} fakes passed of "
                f"{s.notes} notes)"
            )
        )
        print(
            f"| {s.bundle} | {s.artifact} | {s.images} | {s.top1:.1%} | {s.unknown_rate:.1%} "
            f"| {gvc} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
