"""Hostile files: what a user, a config or the network may hand the runtime instead of a model, a
config or a label file. Each case ends in one line on stderr and a non-zero exit (or a clean
refusal from the library), never a hang, a traceback, unbounded memory or a leftover directory.

The numbers in the test names are the rows of docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, build_onnx_classifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.bundle import load_bundle, pack_bundle, remove_stale_extractions, write_bundle
from edge_runtime.bundle.directory import EXTRACT_PREFIX, STALE_AFTER_S
from edge_runtime.errors import BundleError
from edge_runtime.inputfiles import (
    FileTooLargeError,
    NotAFileError,
    check_file_kind,
    open_regular_file,
    read_limited,
)
from edge_runtime.terminal import json_text, printable
from edge_runtime.tomlfile import MAX_TOML_ITEMS, check_shape, parse_toml

LABELS = ["red", "green", "blue"]
SOURCE = "synthetic:traffic-signs"


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    from edge_runtime.cli import main

    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str, expected: str) -> None:
    assert "Traceback" not in err
    assert err == f"edge-runtime: error: {expected}\n"


def bundle_manifest(labels: list[str] | None = None) -> dict[str, object]:
    return {
        "name": "colours",
        "version": 1,
        "labels": list(labels or LABELS),
        "input": {"height": 8, "width": 8},
        "artifacts": [
            {
                "path": "model.onnx",
                "format": "onnx",
                "precision": "int8",
                "input_dtype": "uint8",
                "output_size": 3,
            }
        ],
    }


def write_tiny_bundle(dest: Path, labels: list[str] | None = None) -> Path:
    """A loadable bundle of one tiny ONNX classifier (8x8 input, three classes)."""
    model = build_onnx_classifier(dest.parent / f".{dest.name}.onnx", classes=3)
    write_bundle(dest, bundle_manifest(labels), {"model.onnx": model.path})
    return dest


@pytest.fixture(scope="module")
def tiny_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("tiny")
    return pack_bundle(write_tiny_bundle(base / "colours"), base / "colours.tar")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    import cv2
    import numpy as np

    path = tmp_path / "red.png"
    cv2.imwrite(str(path), np.full((16, 16, 3), (0, 0, 255), np.uint8))
    return path


@contextlib.contextmanager
def watched_fifo(path: Path) -> Iterator[threading.Event]:
    """A FIFO at ``path``. If anything opens it for reading while the block runs, the event is
    set and the reader is let go (a non-blocking open for writing succeeds only while a reader
    waits; closing it gives the reader end of file), so a regression fails instead of hanging."""
    os.mkfifo(path)
    opened = threading.Event()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                done.wait(0.01)
                continue
            opened.set()
            os.close(fd)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield opened
    finally:
        done.set()
        watcher.join()


def write_config(path: Path, model: object, source: str = SOURCE, extra: str = "") -> Path:
    path.write_text(f'[model]\npath = "{model}"\n[source]\nuri = "{source}"\n{extra}')
    return path


# -- the shared checks --------------------------------------------------------------------------


def test_file_kind_checks_refuse_fifos_devices_and_sockets_unopened(tmp_path: Path) -> None:
    regular = tmp_path / "a.txt"
    regular.write_bytes(b"12345")
    assert check_file_kind(regular).st_size == 5
    assert check_file_kind(tmp_path).st_size >= 0
    with open_regular_file(regular) as handle:
        assert handle.read() == b"12345"
    assert read_limited(regular, 5) == b"12345"
    with pytest.raises(FileTooLargeError, match="larger than 4 bytes, the limit"):
        read_limited(regular, 4)
    with pytest.raises(IsADirectoryError):
        read_limited(tmp_path, 10)
    with pytest.raises(NotAFileError, match="is a character device, not a regular file"):
        read_limited("/dev/zero", 10)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "s.sock"))
    try:
        with pytest.raises(NotAFileError, match="is a socket"):
            check_file_kind(tmp_path / "s.sock")
    finally:
        server.close()
    with watched_fifo(tmp_path / "f") as opened:
        with pytest.raises(NotAFileError, match=r"is a FIFO \(named pipe\)"):
            read_limited(tmp_path / "f", 10)
        with pytest.raises(NotAFileError):
            check_file_kind(tmp_path / "f")
    assert not opened.is_set()


# -- 2. FIFOs as model, config, labels ------------------------------------------------------


@pytest.mark.parametrize("name", ["m.fifo", "m.fifo.tflite", "m.fifo.onnx", "m.fifo.tar"])
def test_02_fifo_as_model_is_refused_unopened(
    tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    fifo = tmp_path / name
    with watched_fifo(fifo) as opened:
        code, _, err = cli(capsys, "classify", image, "--model", fifo)
        config = write_config(tmp_path / "runtime.toml", fifo)
        run_code, _, run_err = cli(capsys, "run", "--config", config, "--max-frames", 1)
        bench_code, _, bench_err = cli(capsys, "bench", "--model", fifo, "--frames", 1)
    assert not opened.is_set(), "the FIFO was opened"
    expected = (
        f"cannot use {fifo} as a model: it is a FIFO (named pipe), not a regular file or a "
        "directory"
    )
    assert (code, run_code, bench_code) == (1, 1, 1)
    assert_one_line(err, expected)
    assert_one_line(run_err, expected)
    assert_one_line(bench_err, expected)


def test_02_fifo_as_config_labels_or_profile_is_refused_unopened(
    tmp_path: Path, tiny_tar: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "f.toml"
    with watched_fifo(fifo) as opened:
        results = {
            "run": cli(capsys, "run", "--config", fifo),
            "check-config": cli(capsys, "check-config", fifo),
            "labels": cli(capsys, "classify", image, "--model", tiny_tar, "--labels", fifo),
            "profile": cli(capsys, "classify", image, "--model", tiny_tar, "--profile", fifo),
        }
    assert not opened.is_set(), "the FIFO was opened"
    config_line = f"cannot read config {fifo}: it is a FIFO (named pipe), not a regular file"
    assert results["run"][0] == results["check-config"][0] == 1
    assert_one_line(results["run"][2], config_line)
    assert_one_line(results["check-config"][2], config_line)
    assert_one_line(
        results["labels"][2],
        f"cannot read labels from {fifo}: it is a FIFO (named pipe), not a regular file",
    )
    assert_one_line(
        results["profile"][2],
        f"cannot read device profile {fifo}: it is a FIFO (named pipe), not a regular file",
    )


def test_02_fifo_inside_a_bundle_directory_is_refused_unopened(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "colours")
    (bundle / "model.onnx").unlink()
    with watched_fifo(bundle / "model.onnx") as opened:
        with pytest.raises(BundleError, match=r"model.onnx: it is a FIFO \(named pipe\)"):
            load_bundle(bundle)
    (bundle / "manifest.json").unlink()
    os.symlink("/dev/zero", bundle / "manifest.json")
    with pytest.raises(BundleError, match="manifest.json: it is a character device"):
        load_bundle(bundle)
    assert not opened.is_set()


# -- 13. check-config refuses what run refuses ---------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "device", "gzip", "pad"])
def test_13_check_config_refuses_what_run_refuses(
    tmp_path: Path, tiny_tar: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    model: Path | str = tiny_tar
    extra = ""
    source = SOURCE
    watch = contextlib.nullcontext(threading.Event())
    if kind == "fifo":
        model = tmp_path / "m.fifo.tflite"
        watch = watched_fifo(model)  # type: ignore[assignment]
    elif kind == "device":
        model = "/dev/zero"
    elif kind == "gzip":
        model = tmp_path / "colours.tar"
        model.write_bytes(gzip.compress(tiny_tar.read_bytes()))
    else:
        source = str(tmp_path)  # a folder of images, which takes no "pad"
        extra = "options = { pad = 1 }\n"
    config = write_config(tmp_path / "runtime.toml", model, source, extra)
    with watch as opened:
        check_code, check_out, check_err = cli(capsys, "check-config", config)
        run_code, _, run_err = cli(capsys, "run", "--config", config, "--max-frames", 1)
    assert not opened.is_set()
    assert check_out == ""
    assert check_code == run_code == 1
    assert run_err.startswith("edge-runtime: error: ") and run_err.count("\n") == 1
    reason = run_err.removeprefix("edge-runtime: error: ").strip()
    # check-config names the key path of each problem; `run` says the same of its first one.
    where = "" if reason.startswith("source.options: ") else "model.path: "
    assert_one_line(check_err, f"{config}: {where}{reason}")
    if kind == "device":
        assert reason.strip() == (
            "cannot use /dev/zero as a model: it is a character device, not a regular file or a "
            "directory"
        )


# -- 5. truncated and damaged archives -------------------------------------------------------


def test_05_truncated_tar_is_one_line(
    tmp_path: Path, tiny_tar: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tarfile.open(tiny_tar) as archive:
        member = archive.getmember("model.onnx")
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(tiny_tar.read_bytes()[: member.offset_data + member.size // 2])
    code, _, err = cli(capsys, "classify", image, "--model", truncated)
    assert code == 1
    assert_one_line(
        err, f"bundle archive {truncated} is truncated or damaged: unexpected end of data"
    )


def _fuzz_tar(base: Path) -> tuple[bytes, list[int]]:
    """A packed bundle with fake artifacts, and the offsets where its blocks start. The sample's
    name is over 100 characters, so the archive holds a pax extended header too."""
    folder = base / "b"
    manifest = bundle_manifest()
    sample = "samples/" + "r" * 110 + ".png"
    manifest["samples"] = [{"path": sample, "label": "red"}]
    write_bundle(folder, manifest, {"model.onnx": b"not really onnx" * 40, sample: b"png" * 300})
    tar_path = pack_bundle(folder, base / "b.tar")
    with tarfile.open(tar_path) as archive:
        starts = [m.offset for m in archive.getmembers()]
        starts += [m.offset_data for m in archive.getmembers()]
    return tar_path.read_bytes(), starts


@pytest.fixture(scope="module")
def fuzz_tar(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[int]]:
    return _fuzz_tar(tmp_path_factory.mktemp("fuzz"))


def test_05_truncation_at_every_block_edge_is_refused_or_harmless(
    tmp_path: Path, fuzz_tar: tuple[bytes, list[int]]
) -> None:
    data, _ = fuzz_tar
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        end_of_members = archive.getmembers()[-1].offset_data + archive.getmembers()[-1].size
    for cut in sorted({*range(0, len(data), 256), *range(1, len(data), 512)}):
        path = tmp_path / f"cut{cut}.tar"
        path.write_bytes(data[:cut])
        try:
            load_bundle(path, extract_to=tmp_path / f"dest{cut}").close()
        except BundleError as exc:
            assert "\n" not in str(exc)
        else:
            # Only the padding and the end-of-archive blocks were cut.
            assert cut >= end_of_members, cut


@st.composite
def damaged(draw: st.DrawFn, original: tuple[bytes, list[int]]) -> bytes:
    data, starts = original
    near = st.sampled_from(starts).flatmap(
        lambda start: st.sampled_from([start - 1, start, start + 1, start + 148, start + 511])
    )
    offsets = st.one_of(st.integers(0, len(data)), near).map(lambda o: max(0, min(o, len(data))))
    result = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        offset = draw(offsets)
        if offset < len(result):
            result[offset] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):
        result = result[: draw(offsets)]
    return bytes(result)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_05_damaged_archives_raise_only_bundle_error(
    tmp_path_factory: pytest.TempPathFactory, fuzz_tar: tuple[bytes, list[int]], data: st.DataObject
) -> None:
    blob = data.draw(damaged(fuzz_tar))
    base = tmp_path_factory.mktemp("case")
    path = base / "damaged.tar"
    path.write_bytes(blob)
    dest = base / "dest"
    try:
        bundle = load_bundle(path, extract_to=dest)
    except BundleError as exc:
        assert "\n" not in str(exc)
        assert list(dest.iterdir()) == [] if dest.exists() else True
    else:
        # Only damage the checks cannot see survives: the end-of-archive blocks, the padding,
        # or bytes of a sample (samples carry no hash; the smoke test runs them).
        assert bundle.manifest.labels == LABELS
        artifact = (dest / "model.onnx").read_bytes()
        assert hashlib.sha256(artifact).hexdigest() == bundle.manifest.artifacts[0].sha256


def test_14_damaged_header_mid_archive_names_the_archive(
    tmp_path: Path, tiny_tar: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with tarfile.open(tiny_tar) as archive:
        third = archive.getmembers()[2]
    data = bytearray(tiny_tar.read_bytes())
    data[third.offset + 148 : third.offset + 156] = b"garbage!"  # the header's checksum
    damaged_tar = tmp_path / "damaged.tar"
    damaged_tar.write_bytes(bytes(data))
    code, _, err = cli(capsys, "classify", image, "--model", damaged_tar)
    assert code == 1
    assert_one_line(
        err,
        f"bundle archive {damaged_tar} is damaged: the tar header at byte {third.offset} cannot "
        "be read, so the members after it are lost",
    )


@pytest.mark.parametrize(
    ("compress", "name", "tool"),
    [
        (gzip.compress, "gzip", "gunzip"),
        (lambda b: __import__("bz2").compress(b), "bzip2", "bunzip2"),
        (lambda b: __import__("lzma").compress(b), "xz", "unxz"),
        (lambda b: b"\x28\xb5\x2f\xfd" + b, "zstd", "unzstd"),
    ],
)
def test_14_compressed_tar_is_named_as_compressed(
    tmp_path: Path,
    tiny_tar: Path,
    image: Path,
    capsys: pytest.CaptureFixture[str],
    compress: object,
    name: str,
    tool: str,
) -> None:
    packed = tmp_path / "colours.tar"
    packed.write_bytes(compress(tiny_tar.read_bytes()))  # type: ignore[operator]
    code, _, err = cli(capsys, "classify", image, "--model", packed)
    assert code == 1
    assert_one_line(
        err,
        f"{packed} is {name}-compressed, but a bundle .tar must be uncompressed: unpack it with "
        f"`{tool} < {packed} > bundle.tar`, or pack the bundle without compression "
        "(edge-export bundle writes a plain .tar)",
    )
    with pytest.raises(BundleError, match=f"is {name}-compressed"):
        load_bundle(packed)


# -- 6. manifests that json cannot hold ------------------------------------------------------


def _tar_with_manifest(path: Path, manifest: bytes) -> Path:
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        archive.addfile(info, io.BytesIO(manifest))
    return path


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nests arrays or objects too deeply to read"),
        (
            b'{"schema": 1, "version": ' + b"9" * 5000 + b"}",
            "holds a number of more than 4300 digits",
        ),
        (b'{"schema": 1' + b" " * (1 << 20) + b"}", "is larger than 1 MiB, the limit"),
    ],
    ids=["deep", "5000-digits", "over-1MiB"],
)
@pytest.mark.parametrize("packing", ["directory", "tar"])
def test_06_manifest_json_cannot_hold_is_one_line(
    tmp_path: Path,
    image: Path,
    capsys: pytest.CaptureFixture[str],
    manifest: bytes,
    reason: str,
    packing: str,
) -> None:
    if packing == "tar":
        model = _tar_with_manifest(tmp_path / "m.tar", manifest)
        where = f"{model}:manifest.json"
        if reason.startswith("is larger"):  # refused from the tar header, before reading
            where = ""
            reason = (
                f"bundle archive {model}: member 'manifest.json' is {len(manifest)} bytes, more "
                "than the 1 MiB allowed"
            )
    else:
        model = tmp_path / "bundle"
        model.mkdir()
        (model / "manifest.json").write_bytes(manifest)
        where = f"{model / 'manifest.json'}"
        if reason.startswith("is larger"):
            reason = "it is larger than 1 MiB, the limit"
            where = f"cannot read {where}:"
    code, _, err = cli(capsys, "classify", image, "--model", model)
    assert code == 1
    assert_one_line(err, f"{where} {reason}".strip())


# -- 7. config files that TOML cannot hold ---------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            b'[model]\npath = "\xff\xfe"\n',
            "is not UTF-8 text: byte 0xff at line 2, column 9 "
            "(invalid start byte); save it as UTF-8",
        ),
        ('[model]\npath = "m"\n'.encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
        (
            b"a = " + b"[" * 100_000 + b"]" * 100_000,
            "is not a usable TOML file: arrays, tables "
            "or inline tables nest deeper than 32 levels (line 1)",
        ),
        (
            b"a" + b".a" * 99_999 + b" = 1",
            "is not a usable TOML file: a dotted key has more than 32 parts (line 1)",
        ),
        (b"a = " + b"9" * 5000, "holds a number of more than 4300 digits"),
        (b"# " + b"x" * (1 << 20), None),
    ],
    ids=["utf8", "utf16", "arrays", "dotted", "digits", "size"],
)
@pytest.mark.parametrize("command", ["run", "check-config"])
def test_07_config_toml_cannot_hold_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    reason: str | None,
    command: str,
) -> None:
    config = tmp_path / "runtime.toml"
    config.write_bytes(content)
    argv = ["run", "--config", config] if command == "run" else ["check-config", config]
    code, _, err = cli(capsys, *argv)
    assert code == 1
    if reason is None:
        assert_one_line(err, f"cannot read config {config}: it is larger than 1 MiB, the limit")
    else:
        assert_one_line(err, f"{config} {reason}")


def test_07_dev_zero_as_config_is_refused_unread(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "check-config", "/dev/zero")
    assert code == 1
    assert_one_line(
        err, "cannot read config /dev/zero: it is a character device, not a regular file"
    )


MEASURE = textwrap.dedent(
    """
    import resource, sys
    from edge_runtime.config import read_config_file
    from edge_runtime.errors import ConfigError
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        read_config_file(sys.argv[1])
        outcome = "parsed"
    except ConfigError as exc:
        outcome = "refused"
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(outcome, grown // 1024)
    """
)


def _toml_lines(make: object, budget: int, size: int) -> str:
    """Lines ``make(i)`` while they fit ``size`` bytes and ``budget`` structural items."""
    lines: list[str] = []
    used = total = 0
    index = 0
    while True:
        line = make(index)  # type: ignore[operator]
        cost = sum(line.count(c) for c in "[{.=")
        if total + len(line) > size or used + cost > budget:
            return "".join(lines)
        lines.append(line)
        used += cost
        total += len(line)
        index += 1


def test_07_toml_memory_stays_bounded(tmp_path: Path) -> None:
    """The worst shapes measured: short table headers make the parser keep the most per byte
    (about 1 KiB of bookkeeping per table: 470 MB for a 1 MiB file of them before the item
    budget). Within the limits the worst case measured 50 MB; refused ones, nothing."""
    deep = ".a" * 31
    cases = {
        "headers-within-limits": _toml_lines(lambda i: f"[k{i}{deep}]\n", MAX_TOML_ITEMS, 1 << 20),
        "tables-within-limits": _toml_lines(lambda i: f"[k{i}]\n", MAX_TOML_ITEMS, 1 << 20),
        "headers-over-budget": _toml_lines(lambda i: f"[k{i}]\n", 10**9, (1 << 20) - 64),
        "dotted-40000": "a" + ".a" * 39_999 + " = 1\n",
    }
    measured = {}
    for name, text in cases.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        result = subprocess.run(
            [sys.executable, "-c", MEASURE, str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        outcome, grown_mb = result.stdout.split()
        measured[name] = (outcome, int(grown_mb))
    assert measured["headers-within-limits"][0] == "parsed"
    assert measured["tables-within-limits"][0] == "parsed"
    assert measured["headers-over-budget"][0] == "refused"
    assert measured["dotted-40000"][0] == "refused"
    # 50 MB measured for the worst accepted case; 3x margin for other allocators and Pythons.
    assert max(grown for _, grown in measured.values()) < 150, measured
    # Refused before parsing: the file's own size and the scan's, a few MB at most.
    assert measured["headers-over-budget"][1] < 20, measured
    assert measured["dotted-40000"][1] < 20, measured


def test_07_shape_scan_ignores_brackets_and_dots_in_strings_and_comments() -> None:
    nested = "[" * 40 + "]" * 40
    dotted = ".".join("abcdefghijklmnopqrstuvwxyz0123456789")
    text = textwrap.dedent(
        f"""
        # a comment with {nested} and {dotted}
        a = "{nested}"
        b = '{nested}'
        c = \"\"\"{nested}
        {dotted} \\\" ''' \"\"\"
        d = '''{nested} \"\"\" ''''
        e = 1.5
        f.g = [[1, 2], {{h = 3}}]
        """
    )
    check_shape(text)
    assert parse_toml(text, "t")["d"].endswith("'")
    with pytest.raises(ValueError, match="nest deeper than 32 levels"):
        check_shape("a = " + "[" * 33 + "]" * 33)
    with pytest.raises(ValueError, match="more than 32 parts"):
        check_shape("a" + ".b" * 33 + " = 1")


def test_07_every_shipped_toml_file_passes_the_scan() -> None:
    files = sorted((ROOT / "devices" / "profiles").glob("*.toml"))
    files += sorted(ROOT.glob("**/*.toml"))
    files = [f for f in files if ".venv" not in f.parts]
    assert files
    for path in files:
        parse_toml(path.read_bytes(), str(path))


# -- 8. the unpacked copy of a .tar bundle never outlives the process ------------------------

KILL_AT = textwrap.dedent(
    """
    import os, signal, sys, time
    from contextlib import contextmanager

    point, signum, argv = sys.argv[1], getattr(signal, sys.argv[2]), sys.argv[3:]

    def hit():
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler runs here
        raise SystemExit("the signal did not stop the command")

    if point == "unpacked":  # the .tar is unpacked, the model not yet loaded
        import edge_runtime.bundle.directory as directory
        validate = directory.validate_directory
        def validate_then_hit(*args, **kwargs):
            manifest = validate(*args, **kwargs)
            hit()
        directory.validate_directory = validate_then_hit
    elif point == "loaded":  # the model is loaded, the pipeline being built
        import edge_runtime.wiring as wiring
        class HitPipeline(wiring.Pipeline):
            def __init__(self, *args, **kwargs):
                hit()
        wiring.Pipeline = HitPipeline
    elif point == "built":  # the pipeline is built, its signal handlers not yet installed
        import edge_runtime.service.signals as signals
        @contextmanager
        def hit_first(target, extra=None):
            hit()
            yield
        signals.stop_on_signals = hit_first
    from edge_runtime.cli import main
    sys.exit(main(argv))
    """
)


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}


def _leftovers(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith(EXTRACT_PREFIX))


@pytest.mark.parametrize(
    ("point", "command"),
    [
        ("unpacked", "run"),
        ("loaded", "run"),
        ("built", "run"),
        ("unpacked", "classify"),
    ],
)
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_08_signal_before_the_run_leaves_nothing(
    tmp_path: Path, tiny_tar: Path, image: Path, point: str, command: str, signum: str
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    argv = (
        ["run", "--model", str(tiny_tar), "--source", SOURCE, "--output", "none"]
        if command == "run"
        else ["classify", str(image), "--model", str(tiny_tar)]
    )
    result = subprocess.run(
        [sys.executable, "-c", KILL_AT, point, signum, *argv],
        env=_env(temp),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if signum == "SIGTERM":
        assert (result.returncode, result.stderr.splitlines()[-1]) == (
            143,
            "edge-runtime: terminated",
        ), result.stderr
    else:
        assert (result.returncode, result.stderr.splitlines()[-1]) == (
            130,
            "edge-runtime: interrupted",
        ), result.stderr
    assert "Traceback" not in result.stderr
    assert _leftovers(temp) == []


def test_08_every_end_of_run_removes_the_unpacked_bundle(tmp_path: Path, tiny_tar: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    base = [sys.executable, "-m", "edge_runtime.cli", "run", "--model", str(tiny_tar)]
    # Normal end, and an error after the model is loaded (a sink that cannot open its file).
    (tmp_path / "file").write_text("")
    ended = subprocess.run(
        [*base, "--source", SOURCE, "--output", "none", "--max-frames", "3"],
        env=_env(temp),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ended.returncode == 0, ended.stderr
    failed = subprocess.run(
        [*base, "--source", SOURCE, "--max-frames", "3", "--jsonl-file", str(tmp_path / "file/x")],
        env=_env(temp),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert _leftovers(temp) == []
    # SIGTERM while frames flow: the pipeline stops after the frame in hand.
    running = subprocess.Popen(
        [*base, "--source", SOURCE, "--output", "jsonl"],
        env=_env(temp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert running.stdout is not None
        json.loads(running.stdout.readline())  # a frame was classified
        assert len(_leftovers(temp)) == 1
        running.send_signal(signal.SIGTERM)
        _, err = running.communicate(timeout=60)
    finally:
        running.kill()
        running.wait()
    assert running.returncode == 0, err
    assert _leftovers(temp) == []


def test_08_copies_left_by_a_killed_process_are_removed_at_the_next_start(
    tmp_path: Path, tiny_tar: Path, image: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime.cli", "run", "--model", str(tiny_tar)]
        + ["--source", SOURCE, "--output", "jsonl"],
        env=_env(temp),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert holder.stdout is not None
        holder.stdout.readline()
        (live,) = _leftovers(temp)
        old = time.time() - 2 * STALE_AFTER_S
        os.utime(temp / live, (old, old))
        # A running process's copy is locked: a sweep leaves it, however old.
        assert remove_stale_extractions(temp) == []
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert _leftovers(temp) == [live], "SIGKILL cannot clean up"
    young = temp / f"{EXTRACT_PREFIX}young"
    young.mkdir()  # unlocked but new: may belong to a process about to lock it
    subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_runtime.cli",
            "classify",
            str(image),
            "--model",
            str(tiny_tar),
        ],
        env=_env(temp),
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert _leftovers(temp) == [young.name]


# -- 10. member sizes are checked before reading, and members streamed --------------------------


def _sparse_tar(path: Path, artifact_size: int, declared: int, sha256: str) -> Path:
    """A bundle .tar whose artifact is ``artifact_size`` zero bytes, stored as a hole in a sparse
    file (the disk holds a few KiB), and whose manifest says ``declared`` bytes."""
    manifest = bundle_manifest()
    manifest.update(schema=1, created="2026-01-01T00:00:00Z")
    manifest["artifacts"][0].update(bytes=declared, sha256=sha256)  # type: ignore[index]
    members = [
        ("manifest.json", json.dumps(manifest).encode()),
        ("labels.txt", ("\n".join(LABELS) + "\n").encode()),
    ]
    with open(path, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as archive:
        for name, blob in members:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
        info = tarfile.TarInfo("model.onnx")
        info.size = artifact_size
        header = info.tobuf(archive.format, archive.encoding, archive.errors)
        handle.write(header)
        padded = -(-artifact_size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        handle.seek(padded, os.SEEK_CUR)  # a hole: reads as zeros
        archive.offset += len(header) + padded
    return path


def _peak_python_memory(call: object) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    try:
        call()  # type: ignore[operator]
        error = None
    except BaseException as exc:  # noqa: BLE001 - handed to the caller
        error = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return error, peak


def test_10_member_larger_than_the_manifest_says_is_refused_unread(tmp_path: Path) -> None:
    tar_path = _sparse_tar(tmp_path / "big.tar", 1_900_000_000, 5, "0" * 64)
    dest = tmp_path / "dest"
    error, peak = _peak_python_memory(lambda: load_bundle(tar_path, extract_to=dest))
    assert isinstance(error, BundleError)
    assert str(error) == (
        f"bundle archive {tar_path}: artifact model.onnx is 1900000000 bytes, the manifest says 5: "
        "the file was changed or truncated"
    )
    assert list(dest.iterdir()) == []
    assert peak < 4 << 20, peak  # before: the member was read whole, 3.8 GB


def test_10_large_members_are_streamed_and_hashed_on_the_way(tmp_path: Path) -> None:
    size = 48 << 20
    zeros = hashlib.sha256(bytes(size)).hexdigest()
    dest = tmp_path / "dest"
    wrong = _sparse_tar(tmp_path / "wrong.tar", size, size, "0" * 64)
    error, peak = _peak_python_memory(lambda: load_bundle(wrong, extract_to=dest))
    assert isinstance(error, BundleError)
    assert str(error) == (
        f"artifact model.onnx in bundle archive {wrong} does not match its sha256: the file was "
        "changed or corrupted"
    )
    assert list(dest.iterdir()) == [], "what was written is removed"
    # 1 MiB chunks: the peak is a few chunks, not the 48 MiB member.
    assert peak < 8 << 20, peak
    right = _sparse_tar(tmp_path / "right.tar", size, size, zeros)
    error, peak = _peak_python_memory(lambda: load_bundle(right, extract_to=dest))
    assert error is None
    assert (dest / "model.onnx").stat().st_size == size
    assert peak < 8 << 20, peak


def test_10_manifest_labels_and_samples_have_small_caps(tmp_path: Path) -> None:
    path = tmp_path / "m.tar"
    with open(path, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as archive:
        info = tarfile.TarInfo("manifest.json")
        info.size = 1_500_000_000
        handle.write(info.tobuf(archive.format, archive.encoding, archive.errors))
        handle.seek(-(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE, os.SEEK_CUR)
        archive.offset = handle.tell()
    error, peak = _peak_python_memory(lambda: load_bundle(path))
    assert str(error) == (
        f"bundle archive {path}: member 'manifest.json' is 1500000000 bytes, more than the 1 MiB "
        "allowed"
    )
    assert peak < 4 << 20, peak  # before: 3 GB


# -- 14. labels with terminal escape sequences ---------------------------------------------------

EVIL = "re\x1b[2J\x1b]0;owned\x07d\u202e"
SHOWN = "re\\x1b[2J\\x1b]0;owned\\x07d\\u202e"
# Every class evil, so that whatever the tiny model predicts shows one.
EVIL_LABELS = [EVIL, EVIL + "2", EVIL + "3"]


def test_14_printable_escapes_controls_and_keeps_text() -> None:
    assert printable(EVIL) == SHOWN
    assert printable("Straße 東京 café") == "Straße 東京 café"
    assert printable("a\ud800b\x9bc\u2028") == "a\\ud800b\\x9bc\\u2028"
    line = json_text({"label": EVIL + "\ud800\x9b", "name": "Straße"})
    assert json.loads(line) == {"label": EVIL + "\ud800\x9b", "name": "Straße"}
    assert line.isprintable() and "Straße" in line


def test_14_escape_sequences_in_labels_are_shown_escaped(
    tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = write_tiny_bundle(tmp_path / "evil", labels=EVIL_LABELS)
    code, out, _ = cli(capsys, "classify", image, "--model", bundle, "--top-k", "3")
    assert code == 0
    assert "\x1b" not in out and "\u202e" not in out
    assert out.count(f"  {SHOWN}") == 3, out
    code, out, _ = cli(capsys, "classify", image, "--model", bundle, "--top-k", "3", "--json")
    assert code == 0
    assert "\x1b" not in out and "\u202e" not in out
    labels = sorted(item["label"] for item in json.loads(out)["top"])
    assert labels == sorted(EVIL_LABELS), "JSON keeps the raw labels"
    code, out, _ = cli(
        capsys, "run", "--model", bundle, "--source", SOURCE, "--max-frames", 5, "--debounce", 1
    )
    assert code == 0
    assert "\x1b" not in out and "\u202e" not in out
    assert SHOWN in out


def test_14_escape_sequences_in_error_messages_are_shown_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "m\x1b[2J.tflite"
    code, _, err = cli(capsys, "classify", tmp_path / "x.png", "--model", missing)
    assert code == 1
    assert_one_line(err, f"no model at {tmp_path}/m\\x1b[2J.tflite: no such file or directory")


def test_14_pretty_console_escapes_labels_and_truth() -> None:
    from edge_runtime.sinks.console import PrettySink
    from edge_runtime.types import Prediction

    stream = io.StringIO()
    sink = PrettySink(stream=stream, interval_s=0)
    sink.open()
    prediction = Prediction(
        frame_index=0, timestamp=0.0, label=EVIL, score=0.9, top=(), truth=EVIL, event=True
    )
    sink.emit(prediction)
    sink.close()
    text = stream.getvalue()
    assert SHOWN in text and "\x1b" not in text and "\u202e" not in text
