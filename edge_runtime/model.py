"""A model ready to classify: bundle or bare file, backend, labels, preprocessing, decoding.

A facade over the stages a model needs: it opens the artifact and backend that
:mod:`edge_runtime.selection` chooses, learns the labels and the input description, and feeds
frames through an :class:`~edge_runtime.preprocess.InputWriter`.

:func:`load_model` accepts

- a **bundle** directory or ``.tar``: the artifact is chosen by the device profile's format and
  precision preferences, or by the caller (``artifact=`` / ``precision=`` / ``backend=``);
- a bare **.tflite**: labels from its TFLite metadata (or ``labels=``), input size from its tensor;
- a bare **.onnx**: labels and input description from its ``metadata_props`` (or ``labels=``).

How frames become the input tensor lives in :mod:`edge_runtime.preprocess.input`; which artifact
and backend run here, in :mod:`edge_runtime.selection`. This module loads what those choose.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from devices import DeviceProfile
from edge_runtime.artifacts import open_first, resolve_profile
from edge_runtime.backends import Backend, BackendOptions
from edge_runtime.bundle import Artifact, Bundle, Thresholds, load_bundle
from edge_runtime.bundle.archive import compressed_message, is_plain_tar
from edge_runtime.errors import (
    BundleError,
    ConfigError,
    MissingDependencyError,
    ModelError,
    PreprocessError,
)
from edge_runtime.inputfiles import check_file_kind, describe, open_regular_file
from edge_runtime.labels import check_label_count, read_labels
from edge_runtime.metadata import ModelMetadata, parse_onnx_metadata, read_tflite_metadata
from edge_runtime.postprocess import PostprocessConfig, Postprocessor, ScoreDecoder, top_k
from edge_runtime.preprocess import (
    PIXEL_DOMAIN_MIN_SCALE,
    InputWriter,
    PreprocessSpec,
    Roi,
    pixel_quantization,
)
from edge_runtime.registry import entry
from edge_runtime.selection import (
    DEFAULT_FORMATS,
    DEFAULT_PRECISIONS,
    ArtifactTiming,
    artifact_candidates,
    backend_candidates,
    check_compatible,
    measured_order,
    options_from_profile,
)
from edge_runtime.types import Classification, TensorSpec

log = logging.getLogger(__name__)

MODEL_SUFFIXES = {".tflite": "tflite", ".onnx": "onnx"}


class LoadedModel:
    """A model loaded into a backend with everything needed to classify RGB frames.

    ``labels`` (output order), ``preprocess_spec``, ``backend``, ``info`` (what /status shows),
    ``thresholds`` (from the bundle manifest; none for a bare model) and ``metadata`` (what a bare
    file said about itself). Not thread-safe: one thread uses a model. Close it when done.
    """

    def __init__(
        self,
        *,
        backend: Backend,
        labels: Sequence[str],
        preprocess_spec: PreprocessSpec,
        info: dict[str, Any],
        thresholds: Thresholds | None = None,
        metadata: ModelMetadata | None = None,
        artifact: Artifact | None = None,
        bundle: Bundle | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        activation: str = "auto",
    ) -> None:
        self.backend = backend
        self.labels = list(labels)
        self.preprocess_spec = preprocess_spec
        self.thresholds = thresholds if thresholds is not None else Thresholds()
        self.metadata = metadata
        self.artifact = artifact
        self._bundle = bundle
        self._writer = InputWriter(
            preprocess_spec, backend.input, mean=mean, std=std, target=backend.input_buffer()
        )
        self._decoder = ScoreDecoder(
            len(self.labels),
            scale=backend.output.scale,
            zero_point=backend.output.zero_point,
            activation=activation,
        )
        self.info = dict(info)
        self.info["input"] = {
            "shape": list(backend.input.shape),
            "dtype": backend.input.dtype,
            "layout": backend.input.layout,
            "feed": self._writer.mode,
            "resize": preprocess_spec.resize,
            "interpolation": preprocess_spec.interpolation,
        }

    @property
    def input(self) -> TensorSpec:
        return self.backend.input

    @property
    def output(self) -> TensorSpec:
        return self.backend.output

    def new_input(self) -> np.ndarray:
        """A fresh input tensor (zeros) of the model's shape and dtype, for :meth:`prepare`."""
        return self._writer.new_buffer()

    def prepare(self, image_rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The input tensor for one RGB uint8 frame, written into ``out`` when given (see
        :meth:`new_input`), else into a buffer reused by the next call.

        Safe to call from one thread while another runs :meth:`infer` on tensors prepared
        into other buffers.

        Raises:
            PreprocessError: the frame is not an RGB uint8 image, or ``out`` does not fit.
        """
        return self._writer.write(image_rgb, out)

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """The raw output row for a prepared tensor (reused buffer; see :meth:`Backend.run`).

        Raises:
            BackendError: the inference failed.
        """
        return self.backend.run(tensor)

    def decode(self, row: np.ndarray) -> np.ndarray:
        """Probabilities of a raw output row: dequantized, softmax when needed (reused buffer)."""
        return self._decoder(row)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Probabilities (float32, one per label) for a prepared tensor; a new array.

        Raises:
            BackendError: the inference failed.
        """
        return self._decoder(self.backend.run(tensor)).copy()

    def classify(self, image_rgb: np.ndarray, top_k: int = 5) -> list[Classification]:
        """The ``top_k`` most probable classes of one RGB frame, best first (ties: lower index).

        No thresholds or smoothing: see :meth:`postprocessor` for those.

        Raises:
            PreprocessError: the frame is not an RGB uint8 image.
            BackendError: the inference failed.
        """
        probabilities = self._decoder(self.backend.run(self.prepare(image_rgb)))
        scores = probabilities.tolist()  # Python floats: no numpy scalar per class
        return [
            Classification(i, self.labels[i], scores[i])
            for i in _top_indices(probabilities, top_k).tolist()
        ]

    def default_postprocess_config(self, **overrides: Any) -> PostprocessConfig:
        """Postprocessing settings with the bundle's thresholds, changed by ``overrides``.

        Raises:
            ConfigError: an invalid setting.
        """
        fields: dict[str, Any] = {
            "threshold": self.thresholds.default,
            "per_class_thresholds": dict(self.thresholds.per_class),
        }
        fields.update(overrides)
        return PostprocessConfig(**fields)

    def postprocessor(self, config: PostprocessConfig | None = None) -> Postprocessor:
        """A stateful postprocessor for the probabilities :meth:`infer` returns (bundle
        thresholds by default).

        Its activation is ``none``: :meth:`infer` has already applied the model's (chosen with
        ``load_model(activation=...)``).

        Raises:
            ConfigError: the settings name classes this model does not have.
        """
        chosen = config or self.default_postprocess_config()
        return Postprocessor(self.labels, dataclasses.replace(chosen, activation="none"))

    def close(self) -> None:
        """Free the backend and the unpacked copy of a ``.tar`` bundle. Safe to call twice."""
        self.backend.close()
        if self._bundle is not None:
            self._bundle.close()
            self._bundle = None

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: up to this many classes one stable sort is cheaper than top_k's partition and tie handling
_SORT_ALL_UP_TO = 256


def _top_indices(probabilities: np.ndarray, k: int) -> np.ndarray:
    """:func:`~edge_runtime.postprocess.top_k` (best first, ties to the lower index, NaN last),
    with one call for a model of few classes: a stable ascending sort of the negated scores keeps
    tied classes in index order and puts NaN (negated, still NaN) last."""
    k = max(1, int(k))
    if probabilities.dtype.kind == "f" and probabilities.shape[0] <= _SORT_ALL_UP_TO:
        return np.argsort(np.negative(probabilities), kind="stable")[:k]
    return top_k(probabilities, k)


# --------------------------------------------------------------------------------------------
# Loading


def model_kind(path: str | os.PathLike[str]) -> str:
    """What a model path names, judged without loading it: ``"bundle"`` (a directory or an
    uncompressed ``.tar``), ``"tflite"`` or ``"onnx"`` (by suffix). Reads at most the first
    tar block. ``run``, ``classify`` and ``check-config`` all ask this first.

    Raises:
        ModelError: nothing is there; a FIFO, a device or a socket (refused unopened: reading
            one could block or never end); a compressed file (the message says how to unpack
            it); or any other file.
    """
    source = Path(path)
    try:
        info = check_file_kind(source)
    except FileNotFoundError:
        raise ModelError(f"no model at {source}: no such file or directory") from None
    except OSError as exc:
        raise ModelError(f"cannot use {source} as a model: {describe(exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        return "bundle"
    fmt = MODEL_SUFFIXES.get(source.suffix.lower())
    if fmt is not None:
        return fmt
    try:
        with open_regular_file(source) as handle:
            head = handle.read(8)
    except OSError as exc:
        raise ModelError(f"cannot read model {source}: {describe(exc)}") from None
    message = compressed_message(source, head)
    if message is not None:
        raise ModelError(message)
    if is_plain_tar(source):
        return "bundle"
    raise ModelError(
        f"cannot load {source}: expected a bundle directory or .tar, a .tflite or an .onnx file"
    )


def load_model(
    path: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | Sequence[str] | None = None,
    backend: str = "auto",
    options: BackendOptions | None = None,
    artifact: str | None = None,
    precision: str | None = None,
    profile: DeviceProfile | str | None = None,
    roi: Roi | None = None,
    activation: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load a bundle (directory or ``.tar``), a bare ``.tflite`` or a bare ``.onnx``.

    ``labels``: a label file (or a list of names) overriding what the model carries.
    ``backend``: ``auto`` (by file format and the profile's backend order), ``litert`` or
    ``onnxruntime``. ``options``: backend settings (default: the profile's). ``artifact`` /
    ``precision``: which artifact of a bundle to run. ``precision="auto"`` times the bundle's
    artifacts on this device on its first load and runs the fastest that passed the accuracy
    gate (:mod:`edge_runtime.autoselect`; the choice is cached in ``cache_dir``, default
    ``$XDG_CACHE_HOME/edge-runtime``, and ``info["selection"]`` tells it); None takes the
    profile's preference order without timing. ``artifact`` wins over ``precision``.
    ``profile``: a device profile or its name (default: formats tflite then onnx, int8 first); a
    bundle whose ``compatible.profiles`` leave it out is refused.

    Raises:
        ModelError: no such file, a FIFO or device (refused unopened), a compressed or otherwise
            unsupported file (see :func:`model_kind`), labels that do not fit the model, or an
            input the runtime cannot feed.
        BundleError: an invalid bundle, or no artifact matching the choice.
        IncompatibleBundleError: the bundle's ``compatible`` range excludes this runtime's
            version, or its profile list excludes ``profile``.
        UnknownComponentError: an unknown backend name.
        ConfigError: a backend that cannot run the chosen format, or a bad setting.
        MissingDependencyError: the backend's package is not installed (names the extra).
        BackendError: the model file is corrupt or the backend cannot load it.
    """
    source = Path(path)
    fmt = model_kind(source)
    device = resolve_profile(profile)
    if options is None:
        options = options_from_profile(device)
    if backend != "auto":
        entry("backend", backend)  # an unknown name is reported before anything is loaded
    if fmt == "bundle":
        return _load_bundle_model(
            source, labels, backend, options, artifact, precision, device, roi, activation,
            cache_dir,
        )  # fmt: skip
    if artifact is not None or precision not in (None, "auto"):
        raise ConfigError("--artifact and --precision choose among a bundle's artifacts")
    return _load_bare_model(source, fmt, labels, backend, options, device, roi, activation)


def _user_labels(labels: str | os.PathLike[str] | Sequence[str]) -> tuple[list[str], str]:
    if isinstance(labels, (str, os.PathLike)):
        return read_labels(labels), str(labels)
    return [str(label) for label in labels], "labels given"


def _precision_of(tensor: TensorSpec) -> str | None:
    """What a bare model's input tells of its precision (None: cannot tell)."""
    if tensor.quantized:  # a quantized input belongs to a fully quantized model
        return "int8"
    if np.dtype(tensor.dtype) == np.float16:
        return "fp16"
    return None


def _output_size(backend: Backend) -> int:
    return int(np.prod(backend.output.shape))


def _check_colour_input(backend: Backend, where: str) -> None:
    channels = backend.input.shape[1] if backend.input.layout == "NCHW" else backend.input.shape[3]
    if channels != 3:
        raise ModelError(
            f"{where}: the model takes {channels}-channel images; only colour (3-channel) "
            "models are supported"
        )


def _describe(backend: Backend) -> dict[str, Any]:
    described = backend.describe()
    return {
        "backend": described.get("backend", backend.name),
        "provider": described.get("provider", ""),
        "threads": described.get("threads", 0),
        "runtime": described,
    }


def _load_bare_model(
    source: Path,
    fmt: str,
    labels: str | os.PathLike[str] | Sequence[str] | None,
    backend_name: str,
    options: BackendOptions,
    device: DeviceProfile | None,
    roi: Roi | None,
    activation: str,
) -> LoadedModel:
    candidates = backend_candidates(fmt, backend_name, device)
    # Read what the file says about itself first: a file that is not a model fails in the backend.
    tflite_metadata = read_tflite_metadata(source) if fmt == "tflite" else None
    backend = open_first(source, fmt, candidates, options)
    try:
        metadata = tflite_metadata or parse_onnx_metadata(backend.model_metadata)
        _check_colour_input(backend, str(source))
        if labels is not None:
            names, labels_from = _user_labels(labels)
        elif metadata.labels:
            names, labels_from = list(metadata.labels), f"{source.name}:{metadata.labels_file}"
        else:
            names = [str(i) for i in range(_output_size(backend))]
            labels_from = "none"
            log.warning(
                "%s carries no labels and none were given (--labels FILE): classes are numbered",
                source,
            )
        check_label_count(names, _output_size(backend), labels_from)
        spec = _bare_preprocess_spec(backend.input, metadata, roi, str(source))
        info = {
            "name": metadata.name or source.stem,
            "version": metadata.version or None,
            "artifact": source.name,
            "path": str(source),
            "format": fmt,
            "precision": _precision_of(backend.input),
            **_describe(backend),
            "labels": len(names),
            "labels_from": labels_from,
            "metadata": metadata.source,
        }
        return LoadedModel(
            backend=backend,
            labels=names,
            preprocess_spec=spec,
            info=info,
            metadata=metadata,
            mean=metadata.mean,
            std=metadata.std,
            activation=activation,
        )
    except BaseException:
        backend.close()
        raise


def _bare_preprocess_spec(
    tensor: TensorSpec, metadata: ModelMetadata, roi: Roi | None, where: str
) -> PreprocessSpec:
    """Squash with area interpolation at the tensor's size, unless the metadata says otherwise."""
    said = (metadata.input_height, metadata.input_width)
    if said != (None, None) and said != (tensor.height, tensor.width):
        log.warning(
            "%s: metadata says %sx%s but the input tensor is %sx%s; using the tensor's size",
            where,
            metadata.input_height,
            metadata.input_width,
            tensor.height,
            tensor.width,
        )
    color = (metadata.color or "RGB").upper()
    if color not in ("RGB", "BGR"):
        raise ModelError(f"{where}: the model takes {color} images; only RGB/BGR are supported")
    fields: dict[str, Any] = {
        "height": tensor.height,
        "width": tensor.width,
        "roi": roi,
        "channel_order": color,
    }
    try:
        spec = PreprocessSpec(
            **fields,
            resize=metadata.resize or "squash",  # type: ignore[arg-type]
            interpolation=metadata.interpolation or "area",  # type: ignore[arg-type]
        )
    except PreprocessError as exc:
        log.warning("%s: ignoring the metadata's resize settings: %s", where, exc)
        spec = PreprocessSpec(**fields)
    return spec


def _load_bundle_model(
    source: Path,
    labels: str | os.PathLike[str] | Sequence[str] | None,
    backend_name: str,
    options: BackendOptions,
    artifact: str | None,
    precision: str | None,
    device: DeviceProfile | None,
    roi: Roi | None,
    activation: str,
    cache_dir: str | os.PathLike[str] | None,
) -> LoadedModel:
    bundle = load_bundle(source)
    try:
        check_compatible(bundle.manifest, profile=device)
        auto = precision == "auto" and artifact is None
        candidates = artifact_candidates(
            bundle,
            artifact=artifact,
            precision=None if precision == "auto" else precision,
            backend=backend_name,
            profile=device,
        )
        selection: dict[str, Any] = {"source": "asked" if artifact or precision else "profile"}
        if auto and len(candidates) > 1:
            from edge_runtime import autoselect

            profile_name = device.name if device is not None else ""

            def measurer(items: Sequence[Artifact]) -> list[ArtifactTiming]:
                return autoselect.measure_isolated(
                    bundle, items, backend=backend_name, options=options, profile=profile_name
                )

            choice = autoselect.choose(
                bundle,
                candidates,
                measurer,
                backend=backend_name,
                options=options,
                profile=profile_name,
                cache_dir=cache_dir,
            )
            candidates = measured_order(candidates, choice.artifact)
            selection = choice.to_json()
        manifest = bundle.manifest
        backend: Backend | None = None
        chosen: Artifact | None = None
        missing: MissingDependencyError | None = None
        for item in candidates:
            try:
                backend = open_first(
                    bundle.path_of(item.path),
                    item.format,
                    backend_candidates(item.format, backend_name, device),
                    options,
                )
            except MissingDependencyError as exc:
                # Try the next artifact: a device without onnxruntime still runs the .tflite.
                missing = missing or exc
                continue
            chosen = item
            break
        if backend is None or chosen is None:
            assert missing is not None
            raise missing
        try:
            names, labels_from = (
                _user_labels(labels) if labels is not None else (manifest.labels, "bundle")
            )
            check_label_count(names, _output_size(backend), labels_from)
            if chosen.output_size != _output_size(backend):
                raise BundleError(
                    f"artifact {chosen.path} outputs {_output_size(backend)} scores but the "
                    f"manifest says {chosen.output_size}"
                )
            _check_colour_input(backend, f"{source}:{chosen.path}")
            spec = manifest.input.preprocess_spec(roi)
            if (spec.height, spec.width) != (backend.input.height, backend.input.width):
                raise BundleError(
                    f"artifact {chosen.path} takes {backend.input.height}x{backend.input.width} "
                    f"images but the manifest says {spec.height}x{spec.width}"
                )
            info = {
                "name": manifest.name,
                "version": manifest.version,
                "artifact": chosen.path,
                "path": str(source),
                "format": chosen.format,
                "precision": chosen.precision,
                **_describe(backend),
                "labels": len(names),
                "labels_from": labels_from,
                "metadata": "bundle",
                "selection": selection,
            }
            return LoadedModel(
                backend=backend,
                labels=names,
                preprocess_spec=spec,
                info=info,
                thresholds=manifest.thresholds,
                artifact=chosen,
                bundle=bundle,
                activation=activation,
            )
        except BaseException:
            backend.close()
            raise
    except BaseException:
        bundle.close()
        raise


__all__ = [
    "DEFAULT_FORMATS",
    "DEFAULT_PRECISIONS",
    "MODEL_SUFFIXES",
    "PIXEL_DOMAIN_MIN_SCALE",
    "InputWriter",
    "LoadedModel",
    "artifact_candidates",
    "load_model",
    "model_kind",
    "options_from_profile",
    "pixel_quantization",
]
