"""``edge-export build RECIPE.toml``: dataset (optional) -> train -> export in one go.

A recipe is a TOML file validated here (unknown keys are errors). Each stage stores a stamp in the
recipe's work directory, ``WORKDIR/stages/<stage>.json``, holding the hash of everything the stage
depends on (its settings and the identity of its inputs). A stage whose hash is unchanged and
whose output is still there is skipped ("up to date"); change a setting, the data or the upstream
model, and that stage and the ones after it run again.

Relative paths in a recipe are relative to the recipe file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from edge_runtime import __version__
from edge_runtime.validation import describe_validation_error
from exporter.errors import ExporterError, RecipeError
from exporter.progress import QUIET, Progress

STAGES = ("dataset", "train", "export")
STAMP_SCHEMA = 1


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSection(_Section):
    """Render a synthetic scenario dataset (``edge-export dataset synth``) into WORKDIR/data."""

    scenario: str = Field(description="Scenario name, e.g. traffic-signs or banknotes.")
    per_class: int = Field(200, ge=1, description="Images rendered per class.")
    size: int = Field(96, ge=16, description="Side of the square images in pixels.")
    seed: int = Field(0, description="Seed of the renderer; the same seed gives the same files.")
    jpeg_quality: int | None = Field(
        None, ge=1, le=100, description="Write JPEG at this quality instead of PNG."
    )


# Training settings are exactly the fields of exporter.train.TrainConfig, minus the ones the recipe
# decides itself; building the section from the dataclass keeps the two from drifting apart.
_TRAIN_DECIDED_BY_RECIPE = {"data", "out", "force", "workers", "cache_dir"}


def _train_section() -> type[BaseModel]:
    from exporter import train

    hints = typing.get_type_hints(train.TrainConfig, vars(train))
    fields: dict[str, Any] = {
        "data": (
            str | None,
            Field(None, description="Dataset folder; default: WORKDIR/data from [dataset]."),
        )
    }
    for item in dataclasses.fields(train.TrainConfig):
        if item.name in _TRAIN_DECIDED_BY_RECIPE:
            continue
        annotation = hints[item.name]
        if item.name == "fractions":
            annotation = tuple[float, float, float]
        default = item.default if item.default is not dataclasses.MISSING else ...
        fields[item.name] = (annotation, default)
    return create_model(
        "TrainSection",
        __config__=ConfigDict(extra="forbid", frozen=True),
        __doc__="Settings of edge-export train (see docs/training.md).",
        **fields,
    )


class ExportSection(_Section):
    """Settings of ``edge-export export``."""

    out: str = Field(description="Bundle directory to write (relative to the recipe file).")
    formats: list[str] = Field(
        default_factory=lambda: [
            "tflite-fp32",
            "tflite-fp16",
            "tflite-dynamic",
            "tflite-int8",
            "onnx-fp32",
            "onnx-int8",
        ],
        description="Formats to export.",
    )
    calibration_images: int = Field(100, ge=1, description="Training images calibrating int8.")
    max_accuracy_drop: float = Field(
        1.0, ge=0, le=100, description="Largest top-1 drop (points) the gate lets through."
    )
    gate_confidence: float = Field(
        0.95, ge=0.5, lt=1, description="Confidence a drop must reach to fail the gate."
    )
    min_agreement: float = Field(
        0.9, ge=0, le=1, description="Fewest images (fraction) whose top-1 must agree with float."
    )
    allow_accuracy_drop: bool = Field(
        False, description="Bundle artifacts that fail the gate anyway."
    )
    threshold: float = Field(0.5, ge=0, le=1, description="Default confidence threshold.")
    profiles: list[str] = Field(default_factory=list, description="Device profiles; empty: any.")
    samples_per_class: int = Field(2, ge=0, description="Held-out images per class in samples/.")
    opset: int = Field(17, ge=13, description="ONNX opset.")
    tar: bool = Field(False, description="Also pack OUT.tar.")

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        from exporter.export.pipeline import parse_formats

        try:
            parse_formats(value)
        except ExporterError as exc:
            raise ValueError(str(exc)) from None
        return value


class Recipe(BaseModel):
    """A build recipe: what to train and how to export it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Bundle name.")
    version: int = Field(gt=0, description="Bundle version; raise it for every release.")
    workdir: str = Field("build", description="Where the dataset, the run and stamps go.")
    dataset: DatasetSection | None = None
    train: Any = Field(description="Settings of edge-export train (checked by TrainSection).")
    export: ExportSection

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        from exporter.bundle import check_name

        try:
            return check_name(value)
        except ExporterError as exc:
            raise ValueError(str(exc)) from None


def _describe(error: ValidationError, section: str = "") -> str:
    return describe_validation_error(
        error, section=section, fallback="recipe", messages={"extra_forbidden": "unknown setting"}
    )


@dataclasses.dataclass(frozen=True)
class LoadedRecipe:
    """A validated recipe with its paths resolved against the recipe file."""

    path: Path
    recipe: Recipe
    train: BaseModel

    @property
    def base(self) -> Path:
        return self.path.parent

    def resolve(self, value: str) -> Path:
        candidate = Path(value).expanduser()
        if not candidate.is_absolute():
            candidate = self.base / candidate
        return Path(os.path.normpath(candidate))  # models/recipes/../x -> models/x

    @property
    def workdir(self) -> Path:
        return self.resolve(self.recipe.workdir)

    @property
    def data_dir(self) -> Path:
        given = getattr(self.train, "data", None)
        return self.resolve(given) if given else self.workdir / "data"

    @property
    def run_dir(self) -> Path:
        return self.workdir / "run"

    @property
    def bundle_dir(self) -> Path:
        return self.resolve(self.recipe.export.out)


def load_recipe(path: str | os.PathLike[str]) -> LoadedRecipe:
    """Read and validate a recipe file.

    Raises:
        RecipeError: the file is missing, not TOML, or breaks the recipe schema (unknown keys
            included); the message names the setting.
    """
    source = Path(path)
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"no recipe at {source}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe {source}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{source} is not valid TOML: {exc}") from exc
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(f"{source}: {_describe(exc)}") from exc
    if not isinstance(recipe.train, dict):
        raise RecipeError(f"{source}: [train] must be a table of settings")
    try:
        train = _train_section().model_validate(recipe.train)
    except ValidationError as exc:
        raise RecipeError(f"{source}: {_describe(exc, 'train')}") from exc
    loaded = LoadedRecipe(path=source.resolve(), recipe=recipe, train=train)
    if recipe.dataset is None and not getattr(train, "data", None):
        raise RecipeError(
            f"{source}: give a [dataset] section to render one, or train.data = 'folder'"
        )
    if recipe.dataset is not None and getattr(train, "data", None):
        raise RecipeError(f"{source}: give either [dataset] or train.data, not both")
    return loaded


# ------------------------------------------------------------------------------------ stamps


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_identity(root: Path) -> str:
    """A cheap identity of a folder's files: sorted (relative path, size, mtime)."""
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            stat = path.stat()
            entries.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    return _digest(entries)


def _stamp_path(loaded: LoadedRecipe, stage: str) -> Path:
    return loaded.workdir / "stages" / f"{stage}.json"


def _read_stamp(loaded: LoadedRecipe, stage: str) -> dict[str, Any] | None:
    try:
        data = json.loads(_stamp_path(loaded, stage).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_stamp(loaded: LoadedRecipe, stage: str, inputs_hash: str, output: Path) -> None:
    path = _stamp_path(loaded, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".json.partial")
    temp.write_text(
        json.dumps(
            {"schema": STAMP_SCHEMA, "stage": stage, "inputs": inputs_hash, "output": str(output)},
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    os.replace(temp, path)


@dataclasses.dataclass
class StageOutcome:
    """What happened to one stage of a build."""

    stage: str
    status: Literal["ran", "up to date"]
    output: Path
    inputs_hash: str


def _stage(
    loaded: LoadedRecipe,
    stage: str,
    inputs: dict[str, Any],
    output: Path,
    output_ok: Callable[[], bool],
    action: Callable[[bool], None],
    force: bool,
    say: Progress,
) -> StageOutcome:
    """Run ``action(replace)`` unless the stamp says the output is current."""
    inputs_hash = _digest(inputs)
    stamp = _read_stamp(loaded, stage)
    current = (
        stamp is not None
        and stamp.get("inputs") == inputs_hash
        and stamp.get("output") == str(output)
        and output_ok()
    )
    if current and not force:
        say.stage(f"{stage}: up to date ({output})")
        return StageOutcome(stage, "up to date", output, inputs_hash)
    say.stage(f"{stage}: running -> {output}")
    # The build owns outputs it wrote before (a stamp names them); anything else is refused by
    # the stage itself unless --force.
    owned = stamp is not None and stamp.get("output") == str(output)
    _stamp_path(loaded, stage).unlink(missing_ok=True)
    action(owned or force)
    _write_stamp(loaded, stage, inputs_hash, output)
    return StageOutcome(stage, "ran", output, inputs_hash)


# ------------------------------------------------------------------------------------ build


def build(
    recipe_path: str | os.PathLike[str], *, force: bool = False, progress: Progress = QUIET
) -> list[StageOutcome]:
    """Run a recipe: dataset (when it has one) -> train -> export, skipping current stages.

    Raises:
        RecipeError: an invalid recipe.
        ExporterError: a stage failed (the message is the stage's own).
    """
    loaded = load_recipe(recipe_path)
    recipe = loaded.recipe
    loaded.workdir.mkdir(parents=True, exist_ok=True)
    outcomes: list[StageOutcome] = []
    versions = {"edge_classify": __version__, "python": sys.version.split()[0]}

    # 1. dataset
    data_dir = loaded.data_dir
    if recipe.dataset is not None:
        settings = recipe.dataset

        def render(replace: bool) -> None:
            from exporter.dataset import synthesize_dataset

            synthesize_dataset(
                settings.scenario,
                data_dir,
                per_class=settings.per_class,
                size=settings.size,
                seed=settings.seed,
                jpeg_quality=settings.jpeg_quality,
                force=replace,
                progress=progress,
            )

        outcomes.append(
            _stage(
                loaded,
                "dataset",
                {"settings": settings.model_dump(), "versions": versions},
                data_dir,
                lambda: data_dir.is_dir() and any(data_dir.iterdir()),
                render,
                force,
                progress,
            )
        )
        data_identity = outcomes[-1].inputs_hash
    else:
        if not data_dir.is_dir():
            raise RecipeError(f"train.data {data_dir} is not a folder")
        data_identity = tree_identity(data_dir)

    # 2. train
    run_dir = loaded.run_dir
    train_settings = loaded.train.model_dump(exclude={"data"})

    def run_training(replace: bool) -> None:
        from exporter.train import TrainConfig, train

        train(
            TrainConfig(data=data_dir, out=run_dir, force=replace, **train_settings),
            progress=progress,
        )

    outcomes.append(
        _stage(
            loaded,
            "train",
            {"settings": train_settings, "data": data_identity, "versions": versions},
            run_dir,
            lambda: (run_dir / "model.keras").is_file() and (run_dir / "splits.json").is_file(),
            run_training,
            force,
            progress,
        )
    )

    # 3. export
    export = recipe.export
    bundle_dir = loaded.bundle_dir

    def run_export(replace: bool) -> None:
        from exporter.export.pipeline import ExportOptions, export_run

        export_run(
            run_dir,
            ExportOptions(
                out=bundle_dir,
                name=recipe.name,
                version=recipe.version,
                formats=tuple(export.formats),
                calibration_images=export.calibration_images,
                max_accuracy_drop=export.max_accuracy_drop,
                allow_accuracy_drop=export.allow_accuracy_drop,
                gate_confidence=export.gate_confidence,
                min_agreement=export.min_agreement,
                force=replace,
                tar=export.tar,
                threshold=export.threshold,
                profiles=tuple(export.profiles),
                samples_per_class=export.samples_per_class,
                opset=export.opset,
            ),
            progress,
        )

    def bundle_ok() -> bool:
        from edge_runtime.bundle import load_bundle
        from edge_runtime.errors import BundleError

        try:
            with load_bundle(bundle_dir) as bundle:
                return bundle.manifest.version == recipe.version and (
                    not export.tar or bundle_dir.with_name(bundle_dir.name + ".tar").is_file()
                )
        except BundleError:
            return False

    model_identity = {
        name: _file_digest(run_dir / name) for name in ("model.keras", "run.json", "splits.json")
    }
    outcomes.append(
        _stage(
            loaded,
            "export",
            {
                "name": recipe.name,
                "version": recipe.version,
                "settings": export.model_dump(),
                "run": model_identity,
                "versions": versions,
            },
            bundle_dir,
            bundle_ok,
            run_export,
            force,
            progress,
        )
    )
    return outcomes
