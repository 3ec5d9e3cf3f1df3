"""A Debian 12 root with fall-edge installed by scripts/install.sh (the PC path), booted under a
real systemd with systemd-nspawn, for tests/test_systemd.py.

What it takes on this machine (no host systemd): `--register=no --keep-unit`; the launching
process in a cgroup of its own under /sys/fs/cgroup/unified/ and /sys/fs/cgroup/systemd/;
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 and `--system-call-filter=bpf`, without which DeviceAllow= is
silently not enforced; `nsenter -t <its PID 1> -a systemctl ...` to drive it. The root is made
once (debootstrap, then install.sh in a chroot, pip reading the same local wheel folders as
this machine) and booted with --volatile=overlay, so every boot starts from the installed state.
"""

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import List, Optional

MIRROR = "http://deb.debian.org/debian"
ROOTS = Path(os.environ.get("FALL_EDGE_NSPAWN_ROOTS", "/var/tmp/fall-edge-nspawn"))
BASE_PACKAGES = "systemd,systemd-sysv,dbus,python3,ca-certificates,procps"
CHECKOUT = Path(__file__).resolve().parents[1]
# pip in the root reads the wheels this machine's pip reads (its /etc/pip.conf names them)
PIP_SOURCES = [Path(p) for p in ("/opt/wheels", "/opt/pypi", "/opt/pypi-more") if Path(p).is_dir()]
_STAMP = "fall-edge-installed"


def why_not_here() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, systemd-nspawn)"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/bootstrap.sh --dev installs it)"
    if not Path("/sys/fs/cgroup/unified").is_dir() or not Path("/sys/fs/cgroup/systemd").is_dir():
        return "no cgroup hierarchies at /sys/fs/cgroup/unified and /sys/fs/cgroup/systemd"
    return None


def pristine_root(log) -> Path:
    root = ROOTS / "bookworm-pristine"
    if (root / "etc" / "debian_version").exists():
        return root
    partial = ROOTS / "bookworm-partial"
    shutil.rmtree(partial, ignore_errors=True)
    ROOTS.mkdir(parents=True, exist_ok=True)
    log("debootstrap bookworm amd64 (minutes)")
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(partial),
                    MIRROR], check=True, stdout=subprocess.DEVNULL)
    partial.rename(root)
    return root


class Chroot:
    """The root with /proc, /sys, /dev, the checkout and the wheel folders mounted; commands as root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounted: List[Path] = []

    def __enter__(self) -> "Chroot":
        binds = [("proc", ["-t", "proc", "proc"]), ("sys", ["--rbind", "/sys"]), ("dev", ["--rbind", "/dev"])]
        binds += [(str(folder).lstrip("/"), ["--bind", str(folder)]) for folder in PIP_SOURCES]
        binds.append(("srv/fall-edge-src", ["--bind", str(CHECKOUT)]))
        for where, args in binds:
            point = self.root / where
            point.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", *args, str(point)], check=True)
            self.mounted.append(point)
        shutil.copy("/etc/resolv.conf", self.root / "etc" / "resolv.conf")
        if Path("/etc/pip.conf").is_file():
            shutil.copy("/etc/pip.conf", self.root / "etc" / "pip.conf")
        # This workplace reaches the registries through a TLS proxy that signs with its own
        # authority: the root trusts what this machine trusts, so pip inside works as pip outside.
        inside = self.root / "usr" / "local" / "share" / "ca-certificates"
        inside.mkdir(parents=True, exist_ok=True)
        for certificate in Path("/usr/local/share/ca-certificates").glob("*.crt"):
            shutil.copy(certificate, inside / certificate.name)
        self.run("update-ca-certificates >/dev/null 2>&1")
        return self

    def run(self, command: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
               "PIP_FIND_LINKS": ":".join(str(p) for p in PIP_SOURCES if p.name == "wheels")}
        return subprocess.run(["chroot", str(self.root), "bash", "-c", command], capture_output=True, text=True,
                              timeout=timeout, env=env)

    def __exit__(self, *exc) -> None:
        for point in reversed(self.mounted):
            subprocess.run(["umount", "-R", "-l", str(point)], check=False)
        self.mounted.clear()


def install_stamp() -> str:
    """A digest of what install.sh installs from the checkout: the root is reinstalled when it changes."""
    digest = hashlib.sha256()
    for top in ("scripts", "edge", "systemd", "configs", "models", "setup.py"):
        path = CHECKOUT / top
        for file in sorted(path.rglob("*") if path.is_dir() else [path]):
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(str(file.relative_to(CHECKOUT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def installed_root(log) -> Path:
    """The pristine root with fall-edge installed as README's PC install says (install.sh, run as
    root; --no-start: systemd is not running in a chroot). Made once; a new checkout's install is
    redone when its stamp (the commit of scripts/ and edge/) differs."""
    stamp = install_stamp()
    root = ROOTS / "bookworm-installed"
    if (root / _STAMP).is_file() and (root / _STAMP).read_text() == stamp:
        return root
    pristine = pristine_root(log)
    shutil.rmtree(root, ignore_errors=True)
    log("copying the pristine root")
    subprocess.run(["cp", "-a", str(pristine), str(root)], check=True)
    with Chroot(root) as chroot:
        log("install.sh in the root (apt, pip: minutes)")
        result = chroot.run("cd /srv/fall-edge-src && bash scripts/install.sh --no-start")
        if result.returncode != 0:
            raise RuntimeError(f"install.sh failed in the root:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        (root / "var" / "log" / "fall-edge-install.log").write_text(result.stdout + result.stderr)
    (root / _STAMP).write_text(stamp)
    return root


class Booted:
    """systemd as PID 1 of the root (an overlay on it: the root itself never changes)."""

    def __init__(self, root: Path, name: str, binds: List[str]) -> None:
        self.root, self.name, self.binds = root, name, binds
        self.process: Optional[subprocess.Popen] = None
        self.pid1 = 0

    def __enter__(self) -> "Booted":
        for hierarchy in ("unified", "systemd"):
            Path(f"/sys/fs/cgroup/{hierarchy}/{self.name}").mkdir(exist_ok=True)
        # The launching shell moves itself into those cgroups before it becomes systemd-nspawn.
        launch = (f"echo $$ > /sys/fs/cgroup/unified/{self.name}/cgroup.procs && "
                  f"echo $$ > /sys/fs/cgroup/systemd/{self.name}/cgroup.procs && exec systemd-nspawn --boot "
                  f"--register=no --keep-unit --volatile=overlay --system-call-filter=bpf -D {self.root} "
                  + " ".join(f"--bind-ro={bind}" for bind in self.binds) + " --console=pipe")
        self.process = subprocess.Popen(["bash", "-c", launch], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT,
                                        env=dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.pid1 = self._find_pid1()
            if self.pid1 and self.systemctl("is-system-running").stdout.strip() in ("running", "degraded"):
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited: {self.process.stdout.read()[-3000:]}")
            time.sleep(0.3)
        raise RuntimeError("the container's systemd did not finish booting within 60 s")

    def _find_pid1(self) -> int:
        """The container's systemd: the child of systemd-nspawn."""
        if self.process is None:
            return 0
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            pids = children.read_text().split()
        except OSError:
            return 0
        return int(pids[0]) if pids else 0

    def run(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", "-t", str(self.pid1), "-a", *command], capture_output=True, text=True,
                              timeout=timeout)

    def systemctl(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("systemctl", *args)

    def show(self, unit: str, *properties: str) -> dict:
        out = self.systemctl("show", unit, "-p", ",".join(properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            if self.pid1:
                self.run("systemctl", "poweroff", "--no-block")
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for hierarchy in ("unified", "systemd"):
            try:
                Path(f"/sys/fs/cgroup/{hierarchy}/{self.name}").rmdir()
            except OSError:
                pass
