"""scripts/install.sh for real, in an arm64 Debian root standing for a Jetson's userland
(tests/arm64_root.py says which Debian stands for which JetPack, and what is faked: NVIDIA's
packages, at the apt boundary only). Inside the root: Dockerfile.l4t's COPY and RUN steps, which
run the install itself (apt, user, venv, package, models from PyPI, config, unit, the doctor as
the service's user) with --no-start, as image builders do, since no systemd runs in a chroot;
then the image's entrypoint as its user, `fall-edge run` on the CPU backends from their aarch64
wheels, on a development clip with a fall; then --uninstall twice and scripts/install.sh again
(the release read from nvidia-l4t-core, the DeviceAllow= drop-in written).

Slow: everything arm64 runs under qemu-user-static (both targets side by side: about 20 minutes here)."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List

import pytest
from arm64_root import TARGETS, Chroot, dockerfile_steps, register_binfmt, why_not_here, working_root
from checkout import fresh_copy

ROOT = Path(__file__).resolve().parents[1]
CLIP = "gmdcsa24_s3_fall20.mp4"  # 6 s: walks in, falls forward at 2.3 s, lies still
START_S = 1.5  # a few seconds of it: from 1.5 s, walking, to the end, lying
# Everything arm64 runs about 100 times slower under qemu (a detector run takes 50 s, a pose run
# 4 s): 3 frames a second, no crops for small people (this one is large), and the detector on the
# first frame and the fall candidate only; both models still run, from their aarch64 wheels.
TEST_CONFIG = """\
mqtt: {enabled: false}
speech: {enabled: false}
buzzer: {enabled: true, pin_factory: mock}
output: {process_fps: 3}
detector: {every_n_frames: 1000}
pose: {max_crops_per_frame: 0}
"""


def write_clip_from(source: Path, start_s: float, out: Path) -> None:
    """The clip from start_s on, re-encoded (OpenCV's mp4v), frame for frame."""
    import cv2

    from edge.capture.opencv_source import iter_video_frames

    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    writer = None
    for index, image in enumerate(iter_video_frames(source)):
        if index < round(start_s * fps):
            continue
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (image.shape[1], image.shape[0]))
        writer.write(image)
    writer.release()


def check(result, what: str) -> str:
    output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"{what} exited {result.returncode}:\n{output}"
    return result.stdout


def install_in_root(jetpack: str, clips_dir: Path) -> List[str]:
    """The whole sequence for one JetPack; returns what it printed worth keeping."""
    target = TARGETS[jetpack]
    transcript: List[str] = []

    def log(message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] JetPack {jetpack}: {message}"
        transcript.append(line)
        print(line, flush=True)

    root = working_root(target, log)
    write_clip_from(clips_dir / CLIP, START_S, root / "var" / "tmp" / CLIP)
    (root / "var" / "tmp" / "site.yaml").write_text(TEST_CONFIG)
    # Dockerfile.l4t's own steps, the root standing in for the L4T base image; the CPU backend
    # (TensorRT and pycuda cannot be had here) and the Debian's Python for the release's.
    steps = dockerfile_steps(ROOT / "Dockerfile.l4t", {"JETPACK": jetpack, "BACKEND": "cpu",
                                                       "INSTALL_FLAGS": f"--python {target.python}"})
    with Chroot(root) as chroot:
        # What a flashed Jetson has before fall-edge: L4T's core package (its release file), and the
        # L4T apt source (added by working_root).
        chroot.trust_host_certificates()
        check(chroot.run("apt-get update -qq && apt-get install -y -qq nvidia-l4t-core 2>&1"), "nvidia-l4t-core")
        log(f"as Debian {target.suite}: Dockerfile.l4t's steps")
        started = time.monotonic()
        for step in steps:
            if step.instruction == "COPY":
                source, dest = step.value.split()
                assert source == "."
                fresh_copy(root / dest.lstrip("/"))
            elif step.instruction == "RUN":
                log(f"RUN {step.value}")
                out = check(chroot.run(step.value + " 2>&1"), f"RUN {step.value}")
                transcript.append(out[-6000:])
        log(f"installed in {time.monotonic() - started:.0f} s")
        assert f"install.sh: JetPack {jetpack}, {target.python}, cpu backend, install" in out
        assert "+ runuser -u fall-edge -- /opt/fall-edge/.venv/bin/fall-edge doctor" in out
        assert "install.sh: enabled, not started (--no-start)" in out
        user = next(step.value for step in steps if step.instruction == "USER")
        entrypoint = json.loads(next(step.value for step in steps if step.instruction == "ENTRYPOINT"))

        state = check(chroot.run("""
            id -nG fall-edge
            stat -c '%a %U:%G %n' /etc/fall-edge/config.yaml /etc/fall-edge/mqtt.password /var/lib/fall-edge
            readlink /etc/systemd/system/multi-user.target.wants/fall-edge.service
            ls /etc/systemd/system/fall-edge.service.d/
            /opt/fall-edge/.venv/bin/python -c 'import sys, cv2; print(sys.version_info[:2], cv2.__file__)'
            uname -m
        """), "the installed state")
        transcript.append(state)
        assert {"fall-edge", "video", "gpio", "audio"} <= set(state.splitlines()[0].split())
        assert "640 root:fall-edge /etc/fall-edge/config.yaml" in state
        assert "600 fall-edge:fall-edge /etc/fall-edge/mqtt.password" in state
        assert "700 fall-edge:fall-edge /var/lib/fall-edge" in state
        assert "/etc/systemd/system/fall-edge.service" in state  # enabled
        assert "devices.conf" not in state  # --no-device-allow
        assert "/opt/fall-edge/.venv/lib/" in state  # no JetPack cv2 in this image: PyPI's headless one
        assert state.strip().endswith("aarch64")

        log(f"the image's entrypoint as {user}, on the CPU backends")
        started = time.monotonic()
        run = chroot.run(f"cd /var/tmp && runuser -u {user} -- {' '.join(entrypoint)} run "
                         f"--config /var/tmp/site.yaml --source /var/tmp/{CLIP} --pad-end 1.5", timeout=1800)
        log(f"ran in {time.monotonic() - started:.0f} s: {run.stderr.strip().splitlines()[-1:]}")
        events = [json.loads(line) for line in check(run, "fall-edge run").splitlines()]
        transcript.append("\n".join(json.dumps(event) for event in events))
        assert "fall_detected" in [event["type"] for event in events]

        log("--uninstall (twice), then scripts/install.sh again, the release read from nvidia-l4t-core")
        source = "/usr/src/fall-edge"
        out = check(chroot.run(f"{source}/scripts/install.sh --uninstall 2>&1"), "--uninstall")
        assert "kept /var/lib/fall-edge" in out
        gone = chroot.run("id fall-edge; ls /etc/systemd/system/fall-edge.service /opt/fall-edge/.venv")
        assert "no such user" in gone.stderr and gone.stderr.count("No such file") == 2, gone.stderr
        check(chroot.run(f"{source}/scripts/install.sh --uninstall 2>&1"), "a second --uninstall")
        started = time.monotonic()
        # Issue 39, defect 4: the TensorRT backend on an image without CUDA's toolkit (board support
        # only) stops before pip with the package to install, instead of pycuda's build failing halfway.
        no_cuda = chroot.run(f"cd {source} && scripts/install.sh --python {target.python} --no-start")
        assert no_cuda.returncode == 1, no_cuda.stdout[-2000:] + no_cuda.stderr[-2000:]
        assert "install.sh: CUDA's toolkit is missing under /usr/local/cuda (nvcc cuda.h libcurand)" in no_cuda.stderr
        assert "pip" not in no_cuda.stdout and "pycuda" not in no_cuda.stdout
        out = check(chroot.run(f"cd {source} && scripts/install.sh --backend cpu --python {target.python} "
                               f"--no-start 2>&1"), "the re-install")
        log(f"re-installed in {time.monotonic() - started:.0f} s")
        assert f"install.sh: JetPack {jetpack}, {target.python}, cpu backend, install" in out
        assert "install.sh: enabled, not started (--no-start)" in out
        dropin = check(chroot.run("cat /etc/systemd/system/fall-edge.service.d/devices.conf && id fall-edge && "
                                  "readlink /etc/systemd/system/multi-user.target.wants/fall-edge.service"),
                       "after the re-install")
        assert "DevicePolicy=closed" in dropin and "ProtectClock=yes" in dropin
    return transcript


def test_install_sh_for_real_in_arm64_roots(clips_dir):
    """Every target at once: their installs are mostly one-core work (dpkg, pip) under qemu, so
    two side by side take about half again as long as one, not twice."""
    reason = why_not_here()
    if reason:
        pytest.skip(reason)
    register_binfmt()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(TARGETS)) as pool:
        futures = {jetpack: pool.submit(install_in_root, jetpack, clips_dir) for jetpack in sorted(TARGETS)}
    failures = []
    for jetpack, future in futures.items():
        try:
            print("\n".join(future.result()))
        except Exception as exc:  # each target's own failure, named; the others still reported
            failures.append(f"JetPack {jetpack} ({TARGETS[jetpack].suite}): {exc}")
    print(f"all targets in {time.monotonic() - started:.0f} s")
    assert not failures, "\n\n".join(failures)
