"""The model that serves: a loaded model and its postprocessor, made from a configuration.

Start-up, a reload (SIGHUP) and an over-the-air hot swap each call :func:`load_serving_model` on
its own and hand the result to :meth:`edge_runtime.pipeline.Pipeline.swap_model`, while the
source and the sinks keep running; wiring those is :mod:`edge_runtime.wiring`'s job. A reload
that changes only the decision settings keeps the model and builds a new postprocessor with
:func:`postprocessor_for`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_runtime.artifacts import resolve_profile
from edge_runtime.errors import ConfigError
from edge_runtime.model import LoadedModel, load_model, options_from_profile
from edge_runtime.postprocess import Postprocessor
from edge_runtime.preprocess import Roi

if TYPE_CHECKING:
    from edge_runtime.config import PostprocessSection, RuntimeConfig


@dataclass(frozen=True)
class ServingModel:
    """A model and the postprocessor for its outputs, ready for ``Pipeline.swap_model``."""

    model: LoadedModel
    postprocessor: Postprocessor

    def close(self) -> None:
        """Free the model (its backend, and the unpacked copy of a ``.tar`` bundle)."""
        self.model.close()


def postprocessor_for(
    model: LoadedModel, section: PostprocessSection, *, stills: bool = False
) -> Postprocessor:
    """The postprocessor ``section`` asks for, over ``model``'s defaults (its bundle's
    thresholds). ``stills``: the frames are unrelated still images (see ``Source.stills``).

    Raises:
        ConfigError: a setting is invalid or names classes the model does not have.
    """
    return model.postprocessor(
        section.to_postprocess_config(model.default_postprocess_config(), stills=stills)
    )


def load_serving_model(
    config: RuntimeConfig,
    *,
    stills: bool = False,
    path: str | os.PathLike[str] | None = None,
) -> ServingModel:
    """Load the model ``config`` names and build its postprocessor.

    ``path`` replaces ``[model] path`` (e.g. the active slot of an update store); ``stills`` is
    the source's ``stills``. The device profile is ``[model] profile`` or the detected one. When
    the postprocessor cannot be built, the model is closed before the error propagates, so a
    refused reload leaks nothing.

    Raises:
        EdgeRuntimeError: the model cannot be loaded (ModelError, BundleError, BackendError,
            MissingDependencyError naming the extra), or the postprocessing settings do not fit
            it (ConfigError).
    """
    from devices import profile_for_this_device

    section = config.model
    profile = (
        profile_for_this_device() if section.profile is None else resolve_profile(section.profile)
    )
    roi = Roi.parse(config.source.roi) if config.source.roi else None
    chosen = section.path if path is None else path
    if chosen is None:
        raise ConfigError(
            "no model to serve: [model] path is not set and the update store has no model yet"
        )
    model = load_model(
        chosen,
        labels=section.labels,
        backend=section.backend,
        artifact=section.artifact,
        precision=section.precision,
        profile=profile,
        options=options_from_profile(profile, threads=section.threads),
        roi=roi,
        cache_dir=section.cache_dir,
    )
    try:
        postprocessor = postprocessor_for(model, config.postprocess, stills=stills)
    except BaseException:
        model.close()
        raise
    return ServingModel(model, postprocessor)
