"""Health of the board itself: SoC temperature and, on a Raspberry Pi, throttling.

A Pi that overheats or gets too little power slows its clock, and a model that ran at 30 fps
runs at 10: the metrics must say why. Each reader takes what it reads from as an argument (a
sysfs root, a command runner), so tests pass fakes, and returns None where the board has no such
thing (an x86 box without thermal zones, no ``vcgencmd``).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: runs a command, returns (exit code, standard output); raises OSError when it cannot start
Runner = Callable[[Sequence[str]], tuple[int, str]]

#: ``vcgencmd get_throttled`` bits (Raspberry Pi firmware documentation)
THROTTLE_BITS = {
    0: "under_voltage",
    1: "arm_frequency_capped",
    2: "throttled",
    3: "soft_temperature_limit",
    16: "under_voltage_occurred",
    17: "arm_frequency_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temperature_limit_occurred",
}
#: thermal zone types that are the SoC (Pi: cpu-thermal; Jetson: CPU-therm, cpu-thermal)
_SOC_ZONES = ("cpu-thermal", "cpu_thermal", "cpu-therm", "soc_thermal", "soc-thermal", "tj-thermal")


def run_command(command: Sequence[str], timeout_s: float = 2.0) -> tuple[int, str]:
    """Run ``command`` (found on PATH) and return its exit code and output.

    Raises:
        OSError: the program is not there or cannot be started; a timeout counts as one.
    """
    if shutil.which(command[0]) is None:
        raise FileNotFoundError(command[0])
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"{command[0]} did not answer within {timeout_s:g} s") from exc
    return done.returncode, done.stdout


def soc_temperature_c(sysfs: str | Path = "/sys") -> float | None:
    """The SoC's temperature in °C from ``<sysfs>/class/thermal/thermal_zone*/temp``
    (millidegrees): the zone whose type names the CPU or SoC, else the first zone. None without
    thermal zones."""
    zones = sorted(Path(sysfs, "class/thermal").glob("thermal_zone*"))
    readings: list[tuple[bool, float]] = []
    for zone in zones:
        try:
            raw = (zone / "temp").read_text().strip()
            kind = (zone / "type").read_text().strip().lower() if (zone / "type").exists() else ""
        except OSError:
            continue
        if raw.lstrip("-").isdigit():
            readings.append((kind in _SOC_ZONES, int(raw) / 1000.0))
    if not readings:
        return None
    soc = [value for is_soc, value in readings if is_soc]
    return soc[0] if soc else readings[0][1]


def parse_throttled(text: str) -> dict[str, bool] | None:
    """``throttled=0x50005`` -> every flag of :data:`THROTTLE_BITS`; None when unreadable."""
    _, sep, value = text.strip().partition("=")
    if not sep:
        return None
    try:
        bits = int(value.strip(), 16)
    except ValueError:
        return None
    return {name: bool(bits >> bit & 1) for bit, name in THROTTLE_BITS.items()}


def throttled_flags(run: Runner = run_command) -> dict[str, bool] | None:
    """The Raspberry Pi's throttling flags from ``vcgencmd get_throttled``; None where the
    command is missing or fails."""
    try:
        code, out = run(["vcgencmd", "get_throttled"])
    except OSError:
        return None
    return parse_throttled(out) if code == 0 else None


@dataclass(frozen=True)
class BoardHealth:
    """One reading: temperature (°C) and throttling flags, each None where unknown."""

    temperature_c: float | None
    throttled: dict[str, bool] | None


class BoardMonitor:
    """Reads the board at most every ``min_interval_s`` (a Prometheus scrape must not spawn a
    process each time). ``sysfs``, ``run`` and ``clock`` are injectable for tests."""

    def __init__(
        self,
        *,
        sysfs: str | Path = "/sys",
        run: Runner = run_command,
        min_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sysfs = sysfs
        self._run = run
        self._interval = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, BoardHealth] | None = None

    def read(self) -> BoardHealth:
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self._interval:
                return self._cached[1]
            health = BoardHealth(soc_temperature_c(self._sysfs), throttled_flags(self._run))
            self._cached = (now, health)
            return health
