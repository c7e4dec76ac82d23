"""The machine a benchmark ran on, for every table: CPU model and flags, cores, load, versions.

int8 speed depends on integer dot-product instructions (x86 AVX-512 VNNI / AVX-VNNI / AMX, ARM
dotprod and i8mm), so the flags that decide it are named explicitly, present or absent.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

#: flags that change int8 and float speed; each is reported as present (+) or absent (-)
FLAGS = {
    "x86_64": ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"),
    "aarch64": ("asimd", "asimddp", "i8mm", "asimdhp", "sve"),
}


def cpu_model_and_flags() -> tuple[str, set[str]]:
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), value.strip())
    model = fields.get("model name") or fields.get("model") or platform.processor() or "unknown"
    if "cpu part" in fields:
        model = f"{model} (CPU part {fields['cpu part']})"
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return model, flags


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine_line() -> str:
    """One line: CPU, the int8-relevant flags (+/-), cores, load average, Python."""
    model, flags = cpu_model_and_flags()
    wanted = FLAGS.get(platform.machine(), ())
    marks = " ".join(f"{'+' if f in flags else '-'}{f}" for f in wanted)
    return (
        f"{model} ({platform.machine()}; {marks}); {os.cpu_count()} cores; "
        f"load average {load_average()}; Python {platform.python_version()}"
    )


if __name__ == "__main__":
    print(machine_line())
