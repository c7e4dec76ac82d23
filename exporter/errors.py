"""The exporter's exceptions: one root; the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class ExporterError(Exception):
    """Root of every error the exporter raises on purpose."""


class DatasetError(ExporterError):
    """A dataset folder is empty, has a single class, or cannot be read."""


class TrainingError(ExporterError):
    """Training cannot start or failed (bad weights, input size the backbone refuses, ...)."""


class ExportError(ExporterError):
    """Conversion, quantization or bundling failed."""


class AccuracyGateError(ExportError):
    """An exported artifact lost more accuracy against the float model than allowed."""


class RecipeError(ExporterError):
    """A build recipe is invalid."""


class PublishError(ExporterError):
    """A TUF repository cannot be created, read, signed or served, or a publish is refused."""
