"""README.md cannot rot: every shell block that can run here is run, every config block parsed.

Blocks preceded by an HTML comment starting with ``<!-- not run by tests`` (they need a camera, a
Raspberry Pi, a Jetson, or are the test command itself) are skipped, and the comment says why.
The others run with bash, from a scratch folder that sees the repository's ``models/`` and
``.venv``, exactly as written.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.config import parse_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[tuple[int, str, str | None]]:
    """(line number, code, skip reason) of each fenced block in the README with this language."""
    text = README.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) != language:
            continue
        before = text[: match.start()].rstrip().splitlines()
        previous = before[-1].strip() if before else ""
        reason = None
        if previous.startswith("<!-- not run by tests"):
            reason = previous.removeprefix("<!--").removesuffix("-->").strip()
        found.append((text[: match.start()].count("\n") + 1, match.group(2), reason))
    return found


SHELL = blocks("sh")


def block_id(block: tuple[int, str, str | None]) -> str:
    first = next(line for line in block[1].splitlines() if line and not line.startswith("#"))
    return f"line{block[0]}-{first.split()[0]}"


def test_the_readme_has_runnable_blocks() -> None:
    runnable = [b for b in SHELL if b[2] is None]
    assert len(runnable) >= 2
    assert any("make demo" in code for _, code, _ in SHELL)


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b, marks=[pytest.mark.tensorflow] if "edge-export" in b[1] else [])
        for b in SHELL
    ],
    ids=block_id,
)
def test_shell_block_runs(block: tuple[int, str, str | None], tmp_path: Path) -> None:
    line, code, reason = block
    if reason is not None:
        pytest.skip(reason)
    if not (ROOT / "models" / "traffic-signs" / "manifest.json").exists():
        pytest.skip("the bundled models are not built")
    for name in ("models", ".venv", "benchmarks"):
        if (ROOT / name).exists():
            (tmp_path / name).symlink_to(ROOT / name)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"README.md block at line {line} failed:\n{code}\n--- stdout\n{result.stdout[-3000:]}"
        f"\n--- stderr\n{result.stderr[-3000:]}"
    )
    # A model the README trains must learn what the README says it learns: 80% test top-1 at
    # least. The banknote example measured 92.8% on its 180 test images; if a CPU's training
    # numerics left it at 88% in truth, seeing below 80% would still have probability 7e-4
    # (binomial), so the claim holds on any CPU without depending on one machine's figure.
    for run_json in sorted(tmp_path.glob("runs/*/run.json")):
        run = json.loads(run_json.read_text(encoding="utf-8"))
        assert run["images"]["test"] >= 150, run["images"]
        assert run["test_accuracy"] >= 0.8, f"{run_json.parent.name}: {run['test_accuracy']}"


def test_config_example_is_valid() -> None:
    examples = blocks("toml")
    assert examples, "the README shows a runtime configuration"
    for _, code, _ in examples:
        config = parse_config(tomllib.loads(code), where="README.md")
        # A device with [update] serves the update store's model instead of [model] path.
        assert config.model.path or config.update


def test_every_command_in_the_table_exists() -> None:
    from edge_runtime.cli import build_parser as runtime_parser
    from exporter.cli import build_parser as export_parser

    text = README.read_text(encoding="utf-8")
    runtime = set(runtime_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    export = set(export_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    for tool, known in (("edge-runtime", runtime), ("edge-export", export)):
        used = set(re.findall(rf"`{tool} ([a-z-]+)", text))
        assert used and used <= known, (tool, used - known)


def test_links_point_to_files() -> None:
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (ROOT / target).exists(), target
