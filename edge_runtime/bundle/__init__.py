"""The model bundle (schema 1): the contract between the exporter and the device.

A bundle is a directory, or an uncompressed ``.tar`` of one, holding ``manifest.json``, the model
artifacts, ``labels.txt`` and ``samples/``.

- :mod:`.manifest`: the manifest schema and its parser (pure);
- :mod:`.archive`: allow-list ``.tar`` extraction and reproducible packing;
- :mod:`.directory`: loading and validating a bundle, writing one atomically.
"""

from edge_runtime.bundle.archive import MAX_TAR_BYTES, MAX_TAR_MEMBERS, extract_bundle_tar
from edge_runtime.bundle.directory import (
    Bundle,
    load_bundle,
    pack_bundle,
    remove_stale_extractions,
    sha256_file,
    validate_directory,
    write_bundle,
)
from edge_runtime.bundle.manifest import (
    LABELS_NAME,
    MANIFEST_NAME,
    SAMPLES_DIR,
    SCHEMA_VERSION,
    Artifact,
    BundleManifest,
    Compatible,
    InputDescription,
    Sample,
    Thresholds,
    Training,
    parse_manifest,
    verify_artifacts,
    verify_labels,
)

__all__ = [
    "LABELS_NAME",
    "MANIFEST_NAME",
    "MAX_TAR_BYTES",
    "MAX_TAR_MEMBERS",
    "SAMPLES_DIR",
    "SCHEMA_VERSION",
    "Artifact",
    "Bundle",
    "BundleManifest",
    "Compatible",
    "InputDescription",
    "Sample",
    "Thresholds",
    "Training",
    "extract_bundle_tar",
    "load_bundle",
    "pack_bundle",
    "parse_manifest",
    "remove_stale_extractions",
    "sha256_file",
    "validate_directory",
    "verify_artifacts",
    "verify_labels",
    "write_bundle",
]
