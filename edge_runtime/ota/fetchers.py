"""Download transports for python-tuf's client: HTTP(S) with caps, and ``file://``.

python-tuf checks what it downloads against signed lengths and hashes; the fetcher only has to
get bytes and give up in time. Its urllib3 fetcher bounds the wait for the *next* bytes (a dead
server), but a server that drips one byte every few seconds never trips that:
:class:`DeadlineFetcher` bounds a whole download too, on an injected clock.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlparse

import tuf.api.exceptions as tuf_exceptions
from tuf.ngclient import FetcherInterface, Urllib3Fetcher

#: bytes read from a file:// repository at a time
FILE_CHUNK = 1 << 16


class FileFetcher(FetcherInterface):
    """``file://`` URLs: a repository on a mounted USB stick or a local mirror.

    A missing file answers like HTTP 404, which is how the client learns that there is no newer
    root.
    """

    def _fetch(self, url: str) -> Iterator[bytes]:
        parsed = urlparse(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise tuf_exceptions.DownloadError(f"not a local file:// URL: {url}")
        path = Path(unquote(parsed.path))
        try:
            handle = open(path, "rb")  # closed by _chunks when the download ends
        except FileNotFoundError:
            raise tuf_exceptions.DownloadHTTPError(f"{path} not found", 404) from None
        except OSError as exc:
            raise tuf_exceptions.DownloadError(f"cannot read {path}: {exc.strerror}") from exc
        return _chunks(handle)


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(FILE_CHUNK):
            yield chunk


class DeadlineFetcher(FetcherInterface):
    """Another fetcher, with a limit on how long one download may take in all, and its
    partial downloads in ``temp_dir`` (python-tuf's default is the system's temporary folder,
    which on many devices is a RAM disk too small for a model)."""

    def __init__(
        self,
        inner: FetcherInterface,
        max_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        temp_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.inner = inner
        self.max_seconds = max_seconds
        self._clock = clock
        self.temp_dir = temp_dir

    @contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        """As python-tuf's, with the partial file in ``temp_dir``.

        Raises:
            DownloadError: the download failed; DownloadLengthMismatchError: it is longer than
                ``max_length``; SlowRetrievalError: it took too long.
        """
        received = 0
        with tempfile.TemporaryFile(dir=self.temp_dir) as temp_file:
            for chunk in self.fetch(url):
                received += len(chunk)
                if received > max_length:
                    raise tuf_exceptions.DownloadLengthMismatchError(
                        f"downloaded {received} bytes exceeding the maximum allowed length of "
                        f"{max_length}"
                    )
                temp_file.write(chunk)
            temp_file.seek(0)
            yield temp_file

    def _fetch(self, url: str) -> Iterator[bytes]:
        started = self._clock()
        chunks = self.inner.fetch(url)
        return self._bounded(chunks, started, url)

    def _bounded(self, chunks: Iterator[bytes], started: float, url: str) -> Iterator[bytes]:
        # python-tuf wraps the errors of starting a download, not those of reading it: a
        # connection that breaks off mid-file raises the transport's own error from the chunks.
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except tuf_exceptions.DownloadError:
                raise
            except Exception as exc:
                raise tuf_exceptions.DownloadError(
                    f"the download of {url} broke off: {type(exc).__name__}"
                ) from exc
            if self._clock() - started > self.max_seconds:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
                raise tuf_exceptions.SlowRetrievalError(
                    f"{url} took more than {self.max_seconds:g} s to download"
                )
            yield chunk


def fetcher_for(
    url: str,
    *,
    timeout_s: float,
    max_download_s: float,
    clock: Callable[[], float] = time.monotonic,
    user_agent: str | None = None,
    temp_dir: str | os.PathLike[str] | None = None,
) -> FetcherInterface:
    """The fetcher for a repository at ``url``: files for ``file://``, urllib3 for http(s)
    (``timeout_s`` to connect and between bytes), both bounded to ``max_download_s`` a file."""
    inner: FetcherInterface
    if url.lower().startswith("file:"):
        inner = FileFetcher()
    else:
        # urllib3's timeout takes a float although the fetcher's signature says int.
        inner = Urllib3Fetcher(
            socket_timeout=timeout_s,  # type: ignore[arg-type]
            app_user_agent=user_agent,
        )
    return DeadlineFetcher(inner, max_download_s, clock, temp_dir)


__all__ = ["DeadlineFetcher", "FileFetcher", "fetcher_for"]
