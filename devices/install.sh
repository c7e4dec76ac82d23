#!/usr/bin/env bash
# Install edge-runtime on a device as a systemd service.
#
#   sudo devices/install.sh                       # Raspberry Pi OS, Jetson, Debian/Ubuntu
#   devices/install.sh --prefix /tmp/dry --no-systemd   # everything under a folder, nothing started
#
# What it does, each step only when needed (a second run changes nothing):
#   1. detects the device profile (devices/profiles/*.toml; --profile overrides it);
#   2. Raspberry Pi OS: apt installs python3-picamera2 (the camera stack comes from apt);
#   3. makes a venv in PREFIX/opt/edge-runtime/venv (with --system-site-packages on a Pi, so
#      picamera2 is seen, and on a Jetson, so JetPack's onnxruntime-gpu is) and pip installs
#      this checkout with the device extras (.[device,rpi] on a Pi);
#   4. copies the bundled models to PREFIX/opt/edge-runtime/models;
#   5. writes PREFIX/etc/edge-runtime/config.toml from the profile, unless it is there already
#      (a config you edited is kept), and checks it with `edge-runtime check-config`;
#   6. installs PREFIX/etc/systemd/system/edge-runtime.service and, without --no-systemd,
#      enables and (re)starts it.
set -euo pipefail

usage() {
  cat <<'TEXT'
usage: install.sh [--prefix DIR] [--no-systemd] [--profile NAME] [--python PYTHON]
                  [--http HOST:PORT] [--ort-wheel FILE] [--reinstall]

  --prefix DIR      install under DIR instead of / (a dry install, e.g. for a test)
  --no-systemd      do not run systemctl (the unit file is still written)
  --profile NAME    the device profile (default: detected; `python3 -m devices list`)
  --python PYTHON   the interpreter the venv is made with (default: python3)
  --http HOST:PORT  the status server's address written into a new config (127.0.0.1:8080)
  --ort-wheel FILE  an onnxruntime-gpu wheel for a Jetson (NVIDIA's, for its JetPack)
  --reinstall       pip install the package again even when this version is installed
TEXT
}

prefix=""
systemd=1
profile=""
python="python3"
http="127.0.0.1:8080"
ort_wheel=""
reinstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a folder}"; shift 2 ;;
    --no-systemd) systemd=0; shift ;;
    --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
    --python) python="${2:?--python needs an interpreter}"; shift 2 ;;
    --http) http="${2:?--http needs HOST:PORT}"; shift 2 ;;
    --ort-wheel) ort_wheel="${2:?--ort-wheel needs a file}"; shift 2 ;;
    --reinstall) reinstall=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

source_dir="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -f "$source_dir/pyproject.toml" ]; then
  echo "install.sh: run it from a checkout of edge-classify (no pyproject.toml in $source_dir)" >&2
  exit 1
fi
if [ -n "$prefix" ]; then
  mkdir -p "$prefix"
  prefix="$(cd "$prefix" && pwd)"
fi
app="$prefix/opt/edge-runtime"
venv="$app/venv"
config_dir="$prefix/etc/edge-runtime"
config="$config_dir/config.toml"
unit_dir="$prefix/etc/systemd/system"
unit="$unit_dir/edge-runtime.service"

say() { printf 'install.sh: %s\n' "$*"; }

# 1. The device profile, by the same detection the runtime uses (standard library only).
if [ -z "$profile" ]; then
  profile="$(PYTHONPATH="$source_dir" "$python" -m devices detect)"
fi
known="$(PYTHONPATH="$source_dir" "$python" -m devices list)"
if ! grep -qx -- "$profile" <<<"$known"; then
  echo "install.sh: unknown profile '$profile' (known: $(echo "$known" | tr '\n' ' '))" >&2
  exit 1
fi
say "device profile $profile"

case "$profile" in
  raspberry-pi-*) platform="rpi" ;;
  jetson-*) platform="jetson" ;;
  *) platform="generic" ;;
esac

# 2. System packages: only for a real install by root (a --prefix install touches nothing else).
if [ -z "$prefix" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  packages="python3-venv"
  if [ "$platform" = "rpi" ]; then
    packages="$packages python3-picamera2"
  fi
  # shellcheck disable=SC2086 # a list of package names
  if ! dpkg -s $packages >/dev/null 2>&1; then
    say "apt-get install $packages"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages
  fi
fi

# 3. The venv and the package.
venv_options=()
extras="device"
if [ "$platform" = "rpi" ]; then
  venv_options+=(--system-site-packages)
  extras="device,rpi"
elif [ "$platform" = "jetson" ]; then
  venv_options+=(--system-site-packages)
fi
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  mkdir -p "$app"
  "$python" -m venv "${venv_options[@]}" "$venv"
fi
if [ "$platform" = "jetson" ]; then
  if [ -n "$ort_wheel" ]; then
    "$venv/bin/python" -m pip install -q "$ort_wheel"
  fi
  if "$venv/bin/python" -c "import onnxruntime" >/dev/null 2>&1; then
    # JetPack's (or the given) onnxruntime-gpu: keep it, PyPI's would be CPU-only.
    extras="tflite,ota,metrics"
  else
    say "warning: no onnxruntime-gpu found; installing PyPI's CPU-only onnxruntime (give --ort-wheel)"
  fi
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$source_dir/pyproject.toml" | head -n 1)"
installed="$("$venv/bin/edge-runtime" --version 2>/dev/null || true)"
if [ "$reinstall" = "1" ] || [ "$installed" != "edge-runtime $version" ]; then
  say "pip install ${source_dir}[${extras}]"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${source_dir}[${extras}]"
else
  say "edge-runtime $version is installed already"
fi

# 4. The bundled models.
mkdir -p "$app/models"
for bundle in "$source_dir"/models/*/manifest.json; do
  [ -f "$bundle" ] || continue
  name="$(basename "$(dirname "$bundle")")"
  if ! diff -rq "$source_dir/models/$name" "$app/models/$name" >/dev/null 2>&1; then
    say "copying model $name"
    rm -rf "$app/models/$name.new"
    cp -R "$source_dir/models/$name" "$app/models/$name.new"
    rm -rf "$app/models/$name"
    mv "$app/models/$name.new" "$app/models/$name"
  fi
done

# 5. The config: written once, from the profile; kept afterwards.
mkdir -p "$config_dir"
if [ -f "$config" ]; then
  say "keeping $config"
else
  # The bundled default for every profile: the traffic-sign classifier.
  model="$app/models/traffic-signs"
  "$venv/bin/python" -m devices config --profile "$profile" --model "$model" --http "$http" \
    > "$config.new"
  mv "$config.new" "$config"
  say "wrote $config"
fi
"$venv/bin/edge-runtime" check-config --quiet "$config"

# 6. The unit, with this install's paths.
mkdir -p "$unit_dir"
sed -e "s#/opt/edge-runtime/venv/bin/edge-runtime#$venv/bin/edge-runtime#" \
    -e "s#/etc/edge-runtime/config.toml#$config#" \
    "$source_dir/devices/systemd/edge-runtime.service" > "$unit.new"
if cmp -s "$unit.new" "$unit"; then
  rm -f "$unit.new"
  unit_changed=0
else
  mv "$unit.new" "$unit"
  unit_changed=1
  say "wrote $unit"
fi
if [ "$systemd" = "1" ]; then
  if ! command -v systemctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then
    echo "install.sh: systemd is not running here; use --no-systemd" >&2
    exit 1
  fi
  getent group gpio >/dev/null || groupadd --system gpio
  getent group video >/dev/null || groupadd --system video
  if [ "$unit_changed" = "1" ]; then
    systemctl daemon-reload
  fi
  systemctl enable edge-runtime.service >/dev/null
  if [ "$unit_changed" = "1" ] || ! systemctl is-active --quiet edge-runtime.service; then
    systemctl restart edge-runtime.service
  fi
  say "edge-runtime is $(systemctl is-active edge-runtime.service); log: journalctl -u edge-runtime -f"
fi
say "done: $venv/bin/edge-runtime daemon --config $config"
