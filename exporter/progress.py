"""Progress of long exporter stages: stage lines and tqdm bars on stderr; --quiet silences it.

Results go to stdout; everything here goes to stderr so ``--json`` output stays clean.
"""

from __future__ import annotations

import sys
from typing import IO, Any


class Progress:
    """Prints stage lines and makes progress bars; does nothing when ``quiet``.

    Warnings are not progress: they print even when ``quiet`` (not with ``warnings=False``, which
    library callers get from :data:`QUIET`).
    """

    def __init__(
        self, quiet: bool = False, stream: IO[str] | None = None, warnings: bool = True
    ) -> None:
        self.quiet = quiet
        self.stream = stream
        self.warnings = warnings

    def _out(self) -> IO[str]:
        # Looked up late so pytest's capsys and redirected stderr see the output.
        return self.stream if self.stream is not None else sys.stderr

    def _write(self, line: str) -> None:
        from tqdm import tqdm

        # tqdm.write clears and redraws an active bar instead of writing through it.
        tqdm.write(line, file=self._out())
        self._out().flush()

    def stage(self, message: str) -> None:
        """Announce a stage of the work (one line)."""
        if not self.quiet:
            self._write(f"==> {message}")

    def note(self, message: str) -> None:
        """A detail line under the current stage."""
        if not self.quiet:
            self._write(f"    {message}")

    def warn(self, message: str) -> None:
        """Something the user should know about the result (one line, even when quiet)."""
        if self.warnings:
            self._write(f"edge-export: warning: {message}")

    def bar(self, total: int, desc: str, unit: str = "img") -> Any:
        """A tqdm progress bar (disabled when quiet); use as a context manager, call ``update``."""
        from tqdm import tqdm

        return tqdm(
            total=total,
            desc=desc,
            unit=unit,
            disable=self.quiet,
            file=self._out(),
            leave=False,
            dynamic_ncols=True,
        )


QUIET = Progress(quiet=True, warnings=False)
