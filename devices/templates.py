"""The runtime config a device starts with, written from its profile (standard library only).

``devices/install.sh`` calls ``python -m devices config --profile NAME --model PATH``: the camera
URI and the thread count come from the profile, the model is the bundled default the installer
copied. The result is a plain TOML file for the person at the device to edit; the installer
never overwrites it once it is there.
"""

from __future__ import annotations

from devices import DeviceProfile, load_profile

DEFAULT_HTTP = "127.0.0.1:8080"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(
    profile: DeviceProfile | str,
    model: str,
    *,
    http: str = DEFAULT_HTTP,
) -> str:
    """The TOML text of a daemon config for ``profile`` (a name or a profile).

    Raises:
        ProfileError: an unknown profile name.
    """
    if isinstance(profile, str):
        profile = load_profile(profile)
    threads = f"threads = {profile.threads}\n" if profile.threads else ""
    return (
        f"# edge-runtime on {profile.name}: {profile.description}.\n"
        "# Written by devices/install.sh from the device profile; edit it freely, the installer\n"
        "# keeps it. Check it with `edge-runtime check-config FILE`; apply it with\n"
        "# `systemctl reload edge-runtime`. Every key: docs/service.md.\n"
        "\n"
        "[model]\n"
        f"path = {_quoted(model)}\n"
        f"profile = {_quoted(profile.name)}\n"
        f"{threads}"
        "\n"
        "[source]\n"
        f"uri = {_quoted(profile.camera)}\n"
        "\n"
        "[service]\n"
        "# 0.0.0.0:8080 shows the live view and /status to the network.\n"
        f"http = {_quoted(http)}\n"
        "stale_after_s = 5.0\n"
        "\n"
        "[outputs]\n"
        "# e.g. gpio = { pin = 17, label = \"counterfeit\", fail_safe = \"on\" }\n"
        "#      mqtt = { url = \"mqtt://broker.local:1883\" }\n"
    )
