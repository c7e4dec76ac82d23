"""Postprocessing: raw model scores to decisions, as pure functions and small stateful classes.

No I/O here: everything works on numpy rows and returns :mod:`edge_runtime.types` values.
"""

from edge_runtime.postprocess.postprocessor import (
    SMOOTHING,
    PostprocessConfig,
    Postprocessor,
)
from edge_runtime.postprocess.rules import CategoryFilter, ConfidenceThresholds
from edge_runtime.postprocess.scores import (
    ACTIVATIONS,
    ScoreDecoder,
    dequantize,
    looks_like_probabilities,
    softmax,
    top_k,
)
from edge_runtime.postprocess.temporal import Debouncer, EmaSmoother, MajorityVote

__all__ = [
    "ACTIVATIONS",
    "SMOOTHING",
    "CategoryFilter",
    "ConfidenceThresholds",
    "Debouncer",
    "EmaSmoother",
    "MajorityVote",
    "PostprocessConfig",
    "Postprocessor",
    "ScoreDecoder",
    "dequantize",
    "looks_like_probabilities",
    "softmax",
    "top_k",
]
