"""Still images: one file, every image under a folder, or a glob pattern."""

from __future__ import annotations

import glob
import logging
import os
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from edge_runtime.errors import PreprocessError, SourceError
from edge_runtime.imageio import DEFAULT_MAX_PIXELS, is_image_path, read_image
from edge_runtime.sources.base import Source, SourceOptions
from edge_runtime.types import Frame

log = logging.getLogger(__name__)

GLOB_CHARACTERS = frozenset("*?[")


def has_glob(text: str) -> bool:
    """True when ``text`` is a glob pattern rather than a plain path."""
    return any(char in GLOB_CHARACTERS for char in text)


def _visible(path: Path, root: Path | None = None) -> bool:
    # Hidden files (.DS_Store, editor swap files) and hidden folders are nobody's images.
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    return not any(part.startswith(".") for part in parts)


def list_image_candidates(location: str | os.PathLike[str]) -> list[Path]:
    """The files a folder, glob or file names, sorted, hidden ones left out.

    Folders are searched recursively, so a class-per-folder dataset works as it is. Files of any
    suffix are returned: the source skips and counts those that are not images.

    Raises:
        SourceError: nothing exists at ``location`` or the folder/glob holds no files.
    """
    text = os.fspath(location)
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and _visible(p, path))
        if not found:
            raise SourceError(f"no files in folder {text}")
        return found
    if path.is_file():
        return [path]
    if has_glob(text):
        matches = glob.glob(os.path.expanduser(text), recursive=True)
        found = sorted(p for p in map(Path, matches) if p.is_file() and _visible(p))
        if not found:
            raise SourceError(f"no files match {text}")
        return found
    raise SourceError(f"no such file or folder: {text}")


class ImageFilesOptions(SourceOptions):
    """Options of an image file, a folder of images or a glob."""

    loop: bool = Field(False, description="Start over at the end instead of stopping.")
    truth_from_folder: bool = Field(
        False, description="Each image's truth is the name of the folder holding it."
    )
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1,
        description="Images declaring more pixels are skipped before decoding (a small file "
        "can declare gigabytes of pixels).",
    )


class ImageFilesSource(Source):
    """Every image of a file, folder (recursive) or glob, in sorted path order.

    A file that is not an image or cannot be decoded is skipped, counted in ``stats.corrupt`` and
    logged as one line, and so is an image whose header declares more than ``max_pixels``
    pixels (refused before it is decoded). Options: ``loop`` (start over at the end instead of
    stopping), ``truth_from_folder`` (each image's ``truth`` is the name of the folder holding
    it, for class-per-folder datasets such as ``gtsrb/stop/0001.png``), ``max_pixels``.
    """

    stills = True
    Options = ImageFilesOptions

    def __init__(
        self,
        uri: str,
        *,
        loop: bool = False,
        truth_from_folder: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__()
        self.uri = uri
        self.loop = loop
        self.truth_from_folder = truth_from_folder
        self.max_pixels = max_pixels
        self._paths: list[Path] | None = None
        self._position = 0
        self._index = 0
        self._closed = False

    def open(self) -> None:
        """List the files.

        Raises:
            SourceError: nothing exists at the path, or it holds no files.
        """
        if self._paths is None:
            self._paths = list_image_candidates(self.location)

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next decodable image; None after the last one (unless ``loop``).

        Raises:
            SourceError: as ``open``; or not one of the files is a readable image.
        """
        if self._paths is None:
            self.open()
        paths = self._paths
        assert paths is not None
        while not self._closed:
            if not paths:
                raise SourceError(f"no readable image in {self.uri}")
            if self._position >= len(paths):
                if not self.loop:
                    self._closed = True
                    return None
                self._position = 0
            path = paths[self._position]
            image = self._decode(path)
            if image is None:
                # Forget it, so a looping source does not count and log it again on every pass.
                del paths[self._position]
                continue
            self._position += 1
            frame = Frame(
                image=image,
                index=self._index,
                timestamp=time.monotonic(),
                # Each result names its own image, not the folder or glob it came from.
                source=str(path),
                truth=path.parent.name if self.truth_from_folder else None,
                meta={"path": str(path)},
            )
            self._index += 1
            self._count(captured=1, delivered=1)
            return frame
        return None

    def _decode(self, path: Path) -> Any:
        if not is_image_path(path):
            reason = "not an image file"
        else:
            try:
                return read_image(path, max_pixels=self.max_pixels)
            except PreprocessError as exc:
                reason = str(exc).removeprefix(f"{path}: ")
        self._count(corrupt=1)
        log.warning("skipping %s: %s", path, reason)
        return None

    def close(self) -> None:
        self._closed = True

    @property
    def ended(self) -> bool:
        return self._closed

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "files": len(self._paths or ())}
