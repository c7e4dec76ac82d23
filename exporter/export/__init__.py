"""Export stages: TFLite and ONNX conversion, metadata, verification with its accuracy gate, and
the export pipeline.

Importing this package is cheap: TensorFlow, tf2onnx and ONNX Runtime are imported inside the
functions that use them.
"""

from exporter.export.pipeline import (
    DEFAULT_FORMATS,
    FORMATS,
    ExportFormat,
    ExportOptions,
    ExportResult,
    export_run,
    parse_formats,
)

__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "ExportFormat",
    "ExportOptions",
    "ExportResult",
    "export_run",
    "parse_formats",
]
