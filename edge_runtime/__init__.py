"""edge-classify device runtime: camera frames in, labels out, in real time.

Importing this package does nothing but define names: no hardware probing, no model loading.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("edge-classify")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
