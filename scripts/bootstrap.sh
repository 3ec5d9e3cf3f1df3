#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine: system packages, .venv, the package, the models.
#   scripts/bootstrap.sh          runtime (CPU backend)
#   scripts/bootstrap.sh --dev    runtime + test tools
#   PYTHON=python3.X scripts/bootstrap.sh   with another Python (3.8 to 3.13, edge/support.py)
# Idempotent: re-running only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  ""|--dev) ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "bootstrap: unknown option $1 (--dev, or none; --help)" >&2; exit 2 ;;
esac
extras="cpu,gst"
[ "${1:-}" = "--dev" ] && extras="cpu,gst,dev"

# A Python outside the supported range (edge/support.py) is refused in one line, before apt or pip.
# The default python3 may be missing on a fresh machine: apt's python3-venv below brings it.
PYTHON="${PYTHON:-python3}"
if command -v "$PYTHON" >/dev/null 2>&1; then
  "$PYTHON" edge/support.py || exit 2
elif [ "$PYTHON" != python3 ]; then
  echo "bootstrap: no Python '$PYTHON' on the PATH: install it or set PYTHON=/path/to/python3.X" >&2
  exit 2
fi

# System packages: OpenCV's runtime libraries, opencv-doc for its sample clip (vtest.avi),
# espeak-ng and aplay for the spoken warning, GStreamer for cameras (and what PyGObject builds
# against, for the in-process appsink reader); for the tests, a real
# MQTT broker, openssl, an RTSP server (GstRtspServer through Debian's python3-gi), and
# Chromium with its driver for the console's browser tests.
packages="python3-venv libgl1 libglib2.0-0 opencv-doc espeak-ng alsa-utils gstreamer1.0-tools gstreamer1.0-plugins-base"
packages="$packages gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav"
packages="$packages gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 libgirepository1.0-dev libcairo2-dev pkg-config"
[ "$extras" = "cpu,gst,dev" ] && packages="$packages mosquitto mosquitto-clients openssl python3-gi gir1.2-gst-rtsp-server-1.0 chromium chromium-driver qemu-user-static debootstrap systemd-container"
need=()
for pkg in $packages; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${need[*]} with apt-get" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # A freshly booted Ubuntu runs unattended upgrades for minutes, holding dpkg's lock: wait for it
  # (up to 10 minutes) instead of failing with apt's raw "Could not get lock".
  if command -v fuser >/dev/null 2>&1 && fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock >/dev/null 2>&1; then
    echo "bootstrap: another apt or dpkg (unattended upgrades?) holds the package lock; waiting for it, up to 10 minutes" >&2
  fi
  lock_wait=(-o DPkg::Lock::Timeout=600)
  $SUDO apt-get "${lock_wait[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${lock_wait[@]}" install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "bootstrap: python3 is still missing after apt-get: apt-get install python3-venv" >&2
  exit 2
fi
"$PYTHON" edge/support.py || exit 2  # a python3 that apt just brought is checked too
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
if [ "$extras" = "cpu,gst,dev" ]; then
  # The tests of the engine build script need PyTorch. Pinned first: on these machines pip
  # takes 2.13.0 from a CPU wheel on disk, where an open range would download a CUDA build
  # of several GB.
  extras="$extras,build"
  echo "bootstrap: installing PyTorch for the build script's tests" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
fi
echo "bootstrap: installing fall-edge[$extras] into .venv" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${extras}]"

if [ "$extras" = "cpu,gst,dev,build" ] && [ ! -f .venv/jetpack46/pkg_resources/__init__.py ]; then
  # What JetPack 4.6 (Python 3.6) gets instead of paho-mqtt 2 and gpiozero 2: tests/test_jetpack46.py
  # runs the MQTT and alarm tests with them.
  echo "bootstrap: installing paho-mqtt 1.6.1 and gpiozero 1.6.2 into .venv/jetpack46" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --target .venv/jetpack46 \
    "paho-mqtt==1.6.1" "gpiozero==1.6.2" "setuptools<70"  # gpiozero 1.6 imports pkg_resources, as a 3.6 venv has
fi

if [ "$extras" = "cpu,gst,dev,build" ] && [ ! -x .ha-venv/bin/hass ]; then
  # A real Home Assistant for tests/test_homeassistant.py, in its own venv on the Python it needs
  # (2025.4 needs 3.13): HA_PYTHON=/path/to/python3.13, else python3.13 on the PATH or under pyenv.
  # (pyenv's shim is on the PATH even where it cannot run 3.13: each candidate must actually run.)
  ha_python=""
  for candidate in ${HA_PYTHON:-} python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python3.13; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1; then
      ha_python="$candidate"
      break
    fi
  done
  if [ -n "$ha_python" ]; then
    echo "bootstrap: installing Home Assistant 2025.4.4 into .ha-venv with $($ha_python --version)" >&2
    "$ha_python" -m venv .ha-venv
    # with what the test's integrations need at start (the test runs it with --skip-pip): MQTT's
    # paho-mqtt, the frontend (onboarding loads it; without it Home Assistant starts in recovery
    # mode) and the auth modules' pyotp and PyQRCode, at the versions 2025.4.4 pins
    .ha-venv/bin/python -m pip install -q --disable-pip-version-check "homeassistant==2025.4.4" "paho-mqtt==2.1.0" \
      "home-assistant-frontend==20250411.0" "pyotp==2.8.0" "PyQRCode==1.2.1"
  else
    echo "bootstrap: no Python 3.13 for Home Assistant: tests/test_homeassistant.py will skip (set HA_PYTHON)" >&2
  fi
fi

echo "bootstrap: fetching models" >&2
.venv/bin/fall-edge fetch-models >/dev/null
echo "bootstrap: ready" >&2
