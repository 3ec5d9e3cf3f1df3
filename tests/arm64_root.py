"""An arm64 Debian root that stands for a Jetson's userland, for tests/test_arm64_install.py.

Made with debootstrap and run under qemu-user-static through binfmt_misc. NVIDIA's packages are
the one part faked, at the apt boundary only: small local .deb packages with the names JetPack
installs (nvidia-l4t-core with its /etc/nv_tegra_release, python3-libnvinfer, python3-jetson-gpio,
libopencv-python), served from a file: apt source. Only nvidia-l4t-core carries a file; the others
are empty (no TensorRT, no Jetson.GPIO, no cv2: the CPU backends, the mock pin factory and PyPI's
headless OpenCV, which install.sh takes when the venv has no cv2, stand in).

Which Debian stands for which JetPack, by the nearest glibc these registries still serve:
JetPack 5 (Ubuntu 20.04, glibc 2.31, Python 3.8) -> Debian 11 bullseye (glibc 2.31, Python 3.9);
JetPack 6 (Ubuntu 22.04, glibc 2.35, Python 3.10) -> Debian 12 bookworm (glibc 2.36, Python 3.11).
JetPack 4.6 (glibc 2.27, Python 3.6) has none: buster (2.28) is gone from the mirrors, so it is
checked by resolution only (tests/test_resolution.py).
"""

import hashlib
import os
import re
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

MIRROR = "http://deb.debian.org/debian"
ROOTS = Path(os.environ.get("FALL_EDGE_ARM64_ROOTS", "/var/tmp/fall-edge-arm64"))
BINFMT = Path("/proc/sys/fs/binfmt_misc")
# What JetPack's image has before fall-edge: Python, systemd (not running in a chroot), and the
# certificates pip needs.
BASE_PACKAGES = "python3,systemd,ca-certificates"


@dataclass(frozen=True)
class Target:
    jetpack: str
    suite: str
    python: str  # the venv's Python in that Debian (install.sh --python)
    l4t: str  # the L4T version the fake nvidia-l4t-core carries
    tensorrt: str


TARGETS = {
    "5": Target("5", "bullseye", "python3.9", "35.4.1-20230801124926", "8.5.2-1+cuda11.4"),
    "6": Target("6", "bookworm", "python3.11", "36.4.0-20240912212859", "10.3.0.30-1+cuda12.5"),
}


def why_not_here() -> Optional[str]:
    """None when this machine can make and run arm64 roots, else why not (the test skips)."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, mounts)"
    for tool in ("debootstrap", "dpkg-deb", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/bootstrap.sh --dev installs it)"
    if not Path("/usr/libexec/qemu-binfmt/aarch64-binfmt-P").exists() and shutil.which("qemu-aarch64-static") is None:
        return "qemu-user-static not installed (scripts/bootstrap.sh --dev installs it)"
    return None


def register_binfmt() -> None:
    """Run aarch64 binaries through qemu: mount binfmt_misc and register Debian's entry."""
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
    if not (BINFMT / "qemu-aarch64").exists():
        (BINFMT / "register").write_text(Path("/usr/lib/binfmt.d/qemu-aarch64.conf").read_text())


def pristine_root(target: Target, log) -> Path:
    """A minbase arm64 root of the target's Debian, made once and kept under ROOTS."""
    root = ROOTS / f"{target.suite}-pristine"
    if (root / "etc" / "debian_version").exists():
        return root
    partial = ROOTS / f"{target.suite}-partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {target.suite} arm64 (minutes)")
    subprocess.run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={BASE_PACKAGES}",
                    target.suite, str(partial), MIRROR], check=True, stdout=subprocess.DEVNULL)
    partial.rename(root)
    return root


def _deb(folder: Path, name: str, version: str, description: str, depends: str = "",
         files: Optional[dict] = None) -> Path:
    """One small binary package made with dpkg-deb: a control file and the given files."""
    tree = folder / f"{name}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    control = [f"Package: {name}", f"Version: {version}", "Architecture: arm64",
               "Maintainer: fall-edge tests <tests@localhost>", "Section: misc", "Priority: optional",
               f"Description: {description}"]
    if depends:
        control.insert(3, f"Depends: {depends}")
    (tree / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
    for path, text in (files or {}).items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text)
    deb = folder / f"{name}_{version}_arm64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.rmtree(tree)
    return deb


def _packages_index(debs: List[Path], folder: Path) -> None:
    """The apt index of a flat repository (what dpkg-scanpackages writes), for `deb [trusted=yes] file:`."""
    stanzas = []
    for deb in debs:
        control = subprocess.run(["dpkg-deb", "--field", str(deb)], check=True, capture_output=True,
                                 text=True).stdout.strip()
        data = deb.read_bytes()
        stanzas.append(f"{control}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
                       f"MD5sum: {hashlib.md5(data).hexdigest()}\nSHA256: {hashlib.sha256(data).hexdigest()}\n")
    (folder / "Packages").write_text("\n".join(stanzas))


def add_fake_l4t_repository(root: Path, target: Target) -> None:
    """NVIDIA's L4T apt repository as JetPack sets it up, with fakes of the packages install.sh asks it for."""
    folder = root / "opt" / "fake-l4t-apt"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    release, revision = target.l4t.split("-")[0].split(".")[:2]
    fake = "FAKE for fall-edge's install test: carries no NVIDIA code"
    debs = [
        _deb(folder, "nvidia-l4t-core", target.l4t, f"NVIDIA L4T core ({fake})",
             files={"etc/nv_tegra_release": f"# R{release} (release), REVISION: {revision}.0, GCID: 0, "
                                             f"BOARD: generic, EABI: aarch64, DATE: Thu Jan  1 00:00:00 UTC 2026\n"}),
        _deb(folder, "python3-libnvinfer", target.tensorrt, f"TensorRT Python bindings ({fake})"),
        _deb(folder, "python3-jetson-gpio", "2.1.7", f"Jetson.GPIO ({fake}; the udev rule only)",
             files={"lib/udev/rules.d/99-gpio.rules": "# Jetson.GPIO's rule: the gpio group owns the pins\n"}),
        # Empty: install.sh then takes PyPI's headless OpenCV, as on a minimal L4T image without cv2.
        _deb(folder, "libopencv-python", "4.8.0-1-g6371ee1", f"JetPack's OpenCV for Python ({fake})"),
    ]
    _packages_index(debs, folder)
    sources = root / "etc" / "apt" / "sources.list.d" / "nvidia-l4t-apt-source.list"
    sources.write_text("deb [trusted=yes] file:/opt/fake-l4t-apt ./\n")


_ARM64_CPU = """processor\t: {index}
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd42
CPU revision\t: 1

"""
_CA_VARIABLES = ("PIP_CERT", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class Chroot:
    """The root with /proc, /sys and /dev mounted and the host's DNS; commands run inside as root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounted: List[Path] = []

    def __enter__(self) -> "Chroot":
        for what, args in (("proc", ["-t", "proc", "proc"]), ("sys", ["--rbind", "/sys"]),
                           ("dev", ["--rbind", "/dev"])):
            point = self.root / what
            subprocess.run(["mount", *args, str(point)], check=True)
            self.mounted.append(point)
        # Under qemu-user, /proc/cpuinfo is the host kernel's (an x86 CPU), which arm64 programs
        # cannot parse (onnxruntime's cpuinfo crashes at import): show them what an arm64 kernel
        # says, with the host's core count, as a Jetson Orin's Cortex-A78AE cores would.
        cpuinfo = self.root.parent / f"{self.root.name}.cpuinfo"
        cpuinfo.write_text("".join(_ARM64_CPU.format(index=index) for index in range(os.cpu_count() or 1)))
        subprocess.run(["mount", "--bind", str(cpuinfo), str(self.root / "proc" / "cpuinfo")], check=True)
        self.mounted.append(self.root / "proc" / "cpuinfo")
        shutil.copy("/etc/resolv.conf", self.root / "etc" / "resolv.conf")
        return self

    def trust_host_certificates(self) -> None:
        """The host's own certificate authorities (this workplace reaches the registries through a
        TLS proxy that signs with one), so pip inside the root reaches PyPI as pip outside does."""
        local = Path("/usr/local/share/ca-certificates")
        if not local.is_dir() or not any(local.glob("*.crt")):
            return
        inside = self.root / "usr" / "local" / "share" / "ca-certificates"
        inside.mkdir(parents=True, exist_ok=True)
        for certificate in local.glob("*.crt"):
            shutil.copy(certificate, inside / certificate.name)
        result = self.run("update-ca-certificates 2>&1")
        if result.returncode != 0:
            raise RuntimeError(f"update-ca-certificates in the root failed: {result.stdout[-500:]}")

    def __exit__(self, *exc) -> None:
        for point in reversed(self.mounted):  # the cpuinfo bind before the /proc under it
            subprocess.run(["umount", "-l", str(point)], check=False)
        self.mounted.clear()

    def run(self, script: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
               "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
        # Where the host tells its clients to find its certificates: the same path inside the root.
        env.update({name: os.environ[name] for name in _CA_VARIABLES if name in os.environ})
        return subprocess.run(["chroot", str(self.root), "/bin/bash", "-c", textwrap.dedent(script)],
                              env=env, capture_output=True, text=True, timeout=timeout)


def working_root(target: Target, log) -> Path:
    """A fresh copy of the pristine root, with the fake L4T repository, for one test."""
    pristine = pristine_root(target, log)
    work = ROOTS / f"{target.suite}-work"
    if work.exists():
        subprocess.run(["umount", "-R", "-l", str(work / "proc"), str(work / "sys"), str(work / "dev")],
                       capture_output=True)
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        if any(point.startswith(str(work) + "/") for point in mounts):  # never delete through a bind mount
            raise RuntimeError(f"{work} still has mounts under it: umount them first")
        shutil.rmtree(work)
    subprocess.run(["cp", "-a", str(pristine), str(work)], check=True)
    # A test root, thrown away after each test: dpkg need not fsync, nor unpack documentation
    # (less time for the install's apt step under qemu).
    (work / "etc" / "dpkg" / "dpkg.cfg.d" / "fall-edge-test").write_text(
        "force-unsafe-io\npath-exclude=/usr/share/doc/*\npath-exclude=/usr/share/man/*\n"
        "path-exclude=/usr/share/locale/*\npath-include=/usr/share/locale/locale.alias\n")
    (work / "etc" / "apt" / "apt.conf.d" / "99fall-edge-test").write_text('Acquire::Languages "none";\n')
    add_fake_l4t_repository(work, target)
    return work


@dataclass
class DockerStep:
    instruction: str  # COPY, RUN, USER, WORKDIR, ENTRYPOINT, CMD
    value: str


def dockerfile_steps(path: Path, build_args: dict) -> List[DockerStep]:
    """The steps of a Dockerfile after FROM, with ARG and ENV values put in (build_args override
    the ARG defaults), continuation lines joined. Enough of the format for Dockerfile.l4t, so a
    test can run its COPY and RUN steps in a root that stands in for the base image."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip("\\").rstrip() + " " if raw.endswith("\\") else raw
        if not raw.endswith("\\"):
            lines.append(current.strip())
            current = ""
    values = dict(build_args)
    steps: List[DockerStep] = []

    def substitute(text: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), ""), text)

    for line in lines:
        instruction, _, value = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "ARG":
            name, _, default = value.partition("=")
            values.setdefault(name.strip(), default.strip())
        elif instruction == "ENV":
            name, _, setting = value.partition("=")
            values[name.strip()] = substitute(setting.strip())
            steps.append(DockerStep("ENV", f"{name.strip()}={values[name.strip()]}"))
        elif instruction != "FROM":
            steps.append(DockerStep(instruction, substitute(value.strip())))
    return steps
