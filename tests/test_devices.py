"""Device profiles and detection."""

from __future__ import annotations

from pathlib import Path

import pytest

import devices
from devices import ProfileError, detect, list_profiles, load_profile, parse_profile

REQUIRED = {"raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-orin-nano", "generic-x86_64"}


def test_required_profiles_ship() -> None:
    assert REQUIRED <= set(list_profiles())


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_profiles_are_complete(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert profile.camera and profile.backends and profile.precision and profile.formats
    assert set(profile.backends) <= {"litert", "onnxruntime"}
    assert profile.threads >= 0


def test_jetson_prefers_gpu_providers_and_pi_prefers_int8() -> None:
    assert load_profile("jetson-orin-nano").onnx_providers[0] == "TensorrtExecutionProvider"
    assert load_profile("jetson-nano").backends[0] == "onnxruntime"
    assert load_profile("raspberry-pi-4").precision[0] == "int8"
    assert load_profile("raspberry-pi-5").camera.startswith("picamera2:")


def fake_root(tmp_path: Path, model: str | None = None, tegra: bool = False) -> str:
    if model is not None:
        (tmp_path / "proc/device-tree").mkdir(parents=True)
        (tmp_path / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    if tegra:
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc/nv_tegra_release").write_text("# R32 (release), REVISION: 7.1")
    return str(tmp_path)


@pytest.mark.parametrize(
    ("model", "tegra", "machine", "expected"),
    [
        ("Raspberry Pi 4 Model B Rev 1.4", False, "aarch64", "raspberry-pi-4"),
        ("Raspberry Pi 5 Model B Rev 1.0", False, "aarch64", "raspberry-pi-5"),
        ("NVIDIA Jetson Nano Developer Kit", True, "aarch64", "jetson-nano"),
        ("NVIDIA Jetson Orin Nano Developer Kit", True, "aarch64", "jetson-orin-nano"),
        ("NVIDIA Jetson Xavier NX", True, "aarch64", "jetson-nano"),
        (None, False, "x86_64", "generic-x86_64"),
        (None, False, "aarch64", "generic-aarch64"),
        ("Pine64 RockPro64", False, "aarch64", "generic-aarch64"),
    ],
)
def test_detect(
    tmp_path: Path, model: str | None, tegra: bool, machine: str, expected: str
) -> None:
    assert detect(fake_root(tmp_path, model, tegra), machine) == expected


def test_detect_is_cached(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "Raspberry Pi 4 Model B")
    assert detect(root, "aarch64") == "raspberry-pi-4"
    (tmp_path / "proc/device-tree/model").write_text("Raspberry Pi 5")
    assert detect(root, "aarch64") == "raspberry-pi-4"
    detect.cache_clear()
    assert detect(root, "aarch64") == "raspberry-pi-5"


def test_detect_on_this_machine_returns_a_profile() -> None:
    assert detect() in list_profiles()
    assert devices.profile_for_this_device().name == detect()


def test_unknown_and_custom_profiles(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="unknown device profile 'toaster'.*raspberry-pi-4"):
        load_profile("toaster")
    custom = tmp_path / "lab.toml"
    custom.write_text('camera = "rtsp://cam/stream"\nbackends = ["onnxruntime"]\nthreads = 2\n')
    profile = load_profile(str(custom))
    assert (profile.name, profile.camera, profile.backends) == (
        "lab",
        "rtsp://cam/stream",
        ("onnxruntime",),
    )
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("camera = ", "invalid TOML"),
        ('camera = "camera:0"\nbackends = ["litert"]\ncolour = 1', "unknown key 'colour'"),
        ('camera = "camera:0"\nbackends = ["tensorrt"]', "unknown value 'tensorrt'"),
        ('camera = "camera:0"\nbackends = []', "at least one backend"),
        ('camera = "camera:0"\nbackends = ["litert"]\nthreads = -1', "non-negative"),
        ('backends = ["litert"]', "'camera'"),
        (
            'camera = "camera:0"\nbackends = ["litert"]\nprecision = ["int4"]',
            "unknown value 'int4'",
        ),
    ],
)
def test_malformed_profiles(text: str, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        parse_profile("bad", text)
