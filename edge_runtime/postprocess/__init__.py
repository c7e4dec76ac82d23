"""Postprocessing: raw model scores to decisions, as pure functions and small stateful classes.

No I/O here: everything works on numpy rows and returns :mod:`edge_runtime.types` values.
"""

from edge_runtime.postprocess.config import (
    SMOOTHING,
    STILLS_DEBOUNCE,
    STREAM_DEBOUNCE,
    PostprocessConfig,
    Smoothing,
    default_debounce,
)
from edge_runtime.postprocess.postprocessor import Postprocessor
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
    "STILLS_DEBOUNCE",
    "STREAM_DEBOUNCE",
    "CategoryFilter",
    "ConfidenceThresholds",
    "Debouncer",
    "EmaSmoother",
    "MajorityVote",
    "PostprocessConfig",
    "Postprocessor",
    "ScoreDecoder",
    "Smoothing",
    "default_debounce",
    "dequantize",
    "looks_like_probabilities",
    "softmax",
    "top_k",
]
