"""scripts/install.sh --dry-run: the plan for each JetPack, checked without root or a Jetson."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def plan(*args: str, dev_root: str = "/nonexistent-dev", l4t_release: str = "/nonexistent-release"
         ) -> subprocess.CompletedProcess:
    env = dict(os.environ, FALL_EDGE_DEV_ROOT=dev_root, FALL_EDGE_L4T_RELEASE_FILE=l4t_release)
    return subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--dry-run", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def written(result: subprocess.CompletedProcess, path: str) -> list:
    """The lines the plan would write to `path` (printed indented under '+ write PATH:')."""
    lines = result.stdout.splitlines()
    start = lines.index(f"+ write {path}:") + 1
    body = []
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        body.append(line[4:])
    return body


def commands(result: subprocess.CompletedProcess) -> list:
    return [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]


@pytest.mark.parametrize("jetpack, python", [("4.6", "python3.6"), ("5", "python3.8"), ("6", "python3.10")])
def test_the_install_plan_for_each_jetpack(jetpack, python):
    result = plan("--jetpack", jetpack)
    assert result.returncode == 0, result.stderr
    steps = commands(result)
    apt = next(step for step in steps if "apt-get install" in step).split()
    for package in ("python3-venv", "python3-dev", "build-essential", "python3-libnvinfer", "python3-gi",
                    "gstreamer1.0-tools", "gstreamer1.0-plugins-bad", "gstreamer1.0-libav", "espeak-ng",
                    "alsa-utils",
                    # Jetson.GPIO with its udev rule, GstApp's typelib, JetPack's cv2 (with GStreamer)
                    "python3-jetson-gpio", "gir1.2-gst-plugins-base-1.0", "libopencv-python"):
        assert package in apt, package
    assert f"{python} -m venv --system-site-packages /opt/fall-edge/.venv" in steps
    pip = next(step for step in steps if "pip" in step and "-e" in step.split())
    constraints = ROOT / "scripts" / "constraints" / f"jetpack-{jetpack}.txt"
    assert f"-c {constraints}" in pip and pip.endswith("-e /opt/fall-edge[jetson]")  # no [cpu] on a Jetson
    # pycuda is built against the venv's numpy, installed first under the release's constraints
    assert "--no-build-isolation" in pip.split()
    numpy = f"/opt/fall-edge/.venv/bin/python -m pip --disable-pip-version-check install -c {constraints} numpy"
    assert steps.index(numpy) < steps.index(pip)
    # trt_pose's weights for configs/jetson.yaml's pose build.source, fetched on the device
    assert "/opt/fall-edge/.venv/bin/fall-edge fetch-models --trt-pose resnet18_baseline_att_224x224_A" in steps
    assert "models/resnet18_baseline_att_224x224_A_epoch_249.pth" in (ROOT / "configs" / "jetson.yaml").read_text()
    # setup.py reads README.md: it is copied with the code
    copy = next(step for step in steps if step.startswith("cp -r "))
    assert f"{ROOT}/README.md" in copy.split() and f"{ROOT}/setup.py" in copy.split()
    # JetPack's cv2 and TensorRT bindings are built against numpy 1.x
    assert ("numpy==1.19.4" if jetpack == "4.6" else "numpy<2") in constraints.read_text().splitlines()
    assert "useradd --system --home-dir /var/lib/fall-edge --shell /usr/sbin/nologin --user-group fall-edge" in steps
    usermod = next(i for i, step in enumerate(steps) if step.startswith("usermod -aG video,gpio,audio"))
    assert steps.index("groupadd -f --system gpio") < usermod  # the gpio group exists before it is given
    assert any(step.startswith("install -m 0640 -o root -g fall-edge") and step.endswith("/etc/fall-edge/config.yaml")
               for step in steps)
    assert "install -m 0600 -o fall-edge -g fall-edge /dev/null /etc/fall-edge/mqtt.password" in steps
    assert "install -m 0644 " + str(ROOT / "systemd" / "fall-edge.service") + \
        " /etc/systemd/system/fall-edge.service" in steps
    assert "install -d -m 0755 /etc/systemd/system/fall-edge.service.d" in steps
    dropin = [line for line in written(result, "/etc/systemd/system/fall-edge.service.d/devices.conf")
              if not line.startswith("#")]
    # ProtectClock= and ProtectKernelLogs= imply DeviceAllow= lines before systemd 253: only here,
    # with the list, never in the unit (where --no-device-allow would leave them closing every device)
    assert dropin == ["[Service]", "DevicePolicy=closed", "ProtectClock=yes", "ProtectKernelLogs=yes",
                      "DeviceAllow=char-video4linux rw", "DeviceAllow=char-alsa rw"]
    # Enabled; the doctor as the service's user before the start (the camera and GPIO still free);
    # a re-run restarts it and clears a start-limit failure.
    doctor = "runuser -u fall-edge -- /opt/fall-edge/.venv/bin/fall-edge doctor --config /etc/fall-edge/config.yaml"
    assert steps[-5:] == ["systemctl enable fall-edge.service", doctor, doctor + " --only platform,engines",
                          "systemctl reset-failed fall-edge.service", "systemctl restart fall-edge.service"]


def test_uninstall_keeps_the_outbox_and_engines_unless_purged():
    kept = commands(plan("--jetpack", "6", "--uninstall"))
    assert "systemctl disable --now fall-edge.service" in kept and not any("/var/lib/fall-edge" in s for s in kept)
    assert "rm -rf /etc/systemd/system/fall-edge.service /etc/systemd/system/fall-edge.service.d" in kept
    purged = commands(plan("--jetpack", "6", "--uninstall", "--purge"))
    assert "rm -rf /var/lib/fall-edge /etc/fall-edge /opt/fall-edge" in purged


def test_the_nano_plan_keeps_to_python_36s_last_releases():
    """JetPack 4.6: pip 9 in Ubuntu 18.04's venv cannot read manylinux2014 wheels; numpy and scipy
    need OpenBLAS's generic ARMv8 kernels on the Nano's Cortex-A57, for the service too."""
    result = plan("--jetpack", "4.6")
    steps = commands(result)
    assert '/opt/fall-edge/.venv/bin/python -m pip --disable-pip-version-check install --upgrade pip<22 ' \
        'setuptools<60 wheel<0.38' in steps
    lines = (ROOT / "scripts" / "constraints" / "jetpack-4.6.txt").read_text().splitlines()
    assert {"numpy==1.19.4", "scipy<1.6", "pycuda<2022.1"} <= set(lines)
    dropin = "/etc/systemd/system/fall-edge.service.d/jetpack-4.6.conf"
    assert f"install -m 0644 {ROOT / 'systemd' / 'jetpack-4.6.conf'} {dropin}" in steps
    assert "Environment=OPENBLAS_CORETYPE=ARMV8" in (ROOT / "systemd" / "jetpack-4.6.conf").read_text().splitlines()
    for jetpack in ("5", "6"):
        assert not any(step.startswith("install ") and "jetpack-4.6.conf" in step or "pip<22" in step
                       for step in commands(plan("--jetpack", jetpack)))


def test_device_allow_lists_this_jetsons_gpu_gpio_and_codec_nodes(tmp_path):
    dev = tmp_path / "dev"
    (dev / "nvgpu" / "igpu0").mkdir(parents=True)
    (dev / "snd").mkdir()
    for name in ("nvhost-ctrl", "nvhost-ctrl-gpu", "nvhost-gpu", "nvmap", "nvgpu/igpu0/ctrl", "nvgpu/igpu0/power",
                 "gpiochip0", "gpiochip1", "video0", "snd/pcmC0D0p", "null", "sda1",
                 "host1x-fence", "nvsciipc"):  # the last two: JetPack 6's GPU path opens them
        (dev / name).write_text("")
    (dev / "v4l2-nvdec").symlink_to(dev / "video0")
    result = plan("--jetpack", "5", dev_root=str(dev))
    lines = written(result, "/etc/systemd/system/fall-edge.service.d/devices.conf")
    allowed = [line.split("=", 1)[1] for line in lines if line.startswith("DeviceAllow=")]
    assert sorted(allowed) == sorted([
        "char-video4linux rw", "char-alsa rw",  # cameras and sound by group: plugged in later too
        "/dev/nvhost-ctrl rw", "/dev/nvhost-ctrl-gpu rw", "/dev/nvhost-gpu rw", "/dev/nvmap rw",
        "/dev/nvgpu/igpu0/ctrl rw", "/dev/nvgpu/igpu0/power rw", "/dev/gpiochip0 rw", "/dev/gpiochip1 rw",
        "/dev/v4l2-nvdec rw", "/dev/host1x-fence rw", "/dev/nvsciipc rw"])
    assert "DevicePolicy=closed" in lines
    without = plan("--jetpack", "5", "--no-device-allow", dev_root=str(dev))
    assert "rm -f /etc/systemd/system/fall-edge.service.d/devices.conf" in commands(without)
    assert "devices.conf:" not in without.stdout


def test_a_machine_without_l4t_gets_the_pc_plan():
    """Issue 39, defect 8: install.sh refused anything that is not a Jetson, so an integrator with
    an x86 mini PC and RTSP cameras had no supported service. Now such a machine is a PC: the same
    unit, user and doctor, the CPU backend, no NVIDIA package, the PC's config template."""
    here = plan()
    assert here.returncode == 0, here.stderr
    assert "not a Jetson" in here.stdout and "installing for a PC with the CPU backend" in here.stdout
    assert here.stdout.splitlines()[1].startswith("install.sh: a PC, python3, cpu backend, install")
    steps = commands(here)
    apt = next(step for step in steps if "apt-get install" in step).split()
    for nvidia in ("python3-libnvinfer", "libopencv-python", "python3-jetson-gpio", "build-essential"):
        assert nvidia not in apt, nvidia
    assert "espeak-ng" in apt and "python3-gi" in apt
    pip = next(step for step in steps if "pip" in step and "-e" in step.split())
    assert pip.endswith("-e /opt/fall-edge[cpu-runtimes]") and " -c " not in pip
    assert any(step.endswith("configs/pc.yaml /etc/fall-edge/config.yaml") for step in steps)
    assert "install -m 0644 " + str(ROOT / "systemd" / "fall-edge.service") + \
        " /etc/systemd/system/fall-edge.service" in steps
    assert not any("jetpack-4.6.conf" in step and step.startswith("install") for step in steps)
    assert plan("--jetpack", "pc").returncode == 0
    refused = plan("--backend", "tensorrt")
    assert refused.returncode == 2 and "--backend tensorrt needs a Jetson's JetPack" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1


def test_the_real_install_on_a_non_jetson_stops_at_tensorrt_and_changes_nothing():
    """Not a dry run: as root, with --jetpack given, the install gets as far as apt and stops there
    with the reason (TensorRT's bindings come from NVIDIA's L4T apt repository), before any user,
    venv or unit exists."""
    import shutil

    if os.geteuid() != 0 or shutil.which("apt-cache") is None:
        pytest.skip("needs root and apt (the real install)")
    if Path("/etc/apt/sources.list.d/nvidia-l4t-apt-source.list").exists():
        pytest.skip("this machine has NVIDIA's L4T apt source")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--jetpack", "6"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "python3-libnvinfer is not in this machine's apt sources" in result.stderr
    assert commands(result) == ["apt-get update"]
    assert not Path("/opt/fall-edge").exists() and not Path("/etc/systemd/system/fall-edge.service").exists()
    assert subprocess.run(["id", "fall-edge"], capture_output=True).returncode != 0


@pytest.mark.parametrize("release, expected", [
    ("# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64", "JetPack 4.6, python3.6"),
    ("# R32 (release), REVISION: 6.1, GCID: 27863751, BOARD: t210ref, EABI: aarch64", "JetPack 4.6, python3.6"),
    ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64", "JetPack 5, python3.8"),
    ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64", "JetPack 6, python3.10"),
    ("# R32 (release), REVISION: 5.1, GCID: 27362550, BOARD: t210ref, EABI: aarch64", "is JetPack 4.5 or older"),
    ("# R32 (release), REVISION: 4.4, GCID: 23942405, BOARD: t210ref, EABI: aarch64", "is JetPack 4.5 or older"),
    ("# R34 (release), REVISION: 1.1, GCID: 30414990, BOARD: t186ref, EABI: aarch64", "not a JetPack fall-edge knows"),
])
def test_the_release_is_read_from_l4t_and_older_r32_is_refused(tmp_path, release, expected):
    """R32 is JetPack 4.4 to 4.6: only R32.6 and R32.7 are 4.6 (before: any R32 was taken for it)."""
    release_file = tmp_path / "nv_tegra_release"
    release_file.write_text(release + "\n")
    result = plan(l4t_release=str(release_file))
    if expected.startswith("JetPack "):
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0].startswith(f"install.sh: {expected}, tensorrt backend, install")
    else:
        assert result.returncode == 2 and expected in result.stderr and len(result.stderr.splitlines()) == 1
        assert commands(result) == []


def test_the_unit_leaves_the_argus_socket_sysfs_gpio_and_devices_reachable():
    """What the service needs must survive its sandbox on systemd 237-249 (JetPack 4.6-6):
    PrivateTmp= hides /tmp/argus_socket (CSI cameras), ProtectKernelTunables= makes /sys read-only
    (Jetson.GPIO's sysfs pins on JetPack 4.6 and 5), and ProtectClock=/ProtectKernelLogs= imply
    DeviceAllow= lines before systemd 253, closing every other device when --no-device-allow
    leaves the drop-in out."""
    unit = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in
            (ROOT / "systemd" / "fall-edge.service").read_text().splitlines() if "=" in line and line[0].isalpha()}
    assert unit.get("PrivateTmp", "no") == "no"
    assert unit.get("ProtectKernelTunables", "no") == "no"
    for implies_device_allow in ("ProtectClock", "ProtectKernelLogs", "DevicePolicy", "DeviceAllow", "PrivateDevices"):
        assert implies_device_allow not in unit, implies_device_allow
    without = plan("--jetpack", "6", "--no-device-allow")
    assert "DeviceAllow" not in without.stdout and "ProtectClock" not in without.stdout


def test_help_prints_the_options_and_changes_nothing():
    result = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--help"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0 and commands(result) == []
    for option in ("--dry-run", "--jetpack", "--uninstall", "--purge", "--no-device-allow", "--no-start", "--backend",
                   "--python"):
        assert option in result.stdout, option
    assert "set -euo" not in result.stdout


def test_the_cpu_backend_plan_installs_wheels_not_pycuda():
    """--backend cpu: ONNX Runtime and LiteRT from their aarch64 wheels, no compiler, no pycuda,
    JetPack's cv2 kept (no pip OpenCV), and the CPU config; the rest as for TensorRT."""
    result = plan("--jetpack", "6", "--backend", "cpu")
    assert result.returncode == 0, result.stderr
    steps = commands(result)
    apt = next(step for step in steps if "apt-get install" in step).split()
    assert "build-essential" not in apt and "python3-dev" not in apt and "libopencv-python" in apt
    pip = next(step for step in steps if "pip" in step and "-e" in step.split())
    assert pip.endswith("-e /opt/fall-edge[cpu-runtimes]") and "opencv-python" not in pip
    assert not any("pycuda" in step or "--no-build-isolation" in step for step in steps)
    assert any(step.endswith("configs/jetson-cpu.yaml /etc/fall-edge/config.yaml") for step in steps)
    assert "/opt/fall-edge/.venv/bin/fall-edge fetch-models" in steps
    assert not any("--trt-pose" in step for step in steps)  # no trt_pose without TensorRT
