"""Every pinned requirement of a Jetson install resolves for the JetPack's own Python on aarch64
with manylinux tags no newer than its glibc: as a wheel, or as a pure-Python sdist that builds
on that CPython here. One test per release; a failure names the package.

How: pip, run by that CPython (from ~/.pyenv/versions, so the setup.py markers are evaluated as
the Jetson would), resolves setup.py's requirements and the release's constraints; then each
distribution it picked is fetched again, alone, as an aarch64 wheel for that glibc, and each sdist
is built into a wheel that must be pure (py3-none-any). pycuda is the one exception: it compiles
against JetPack's CUDA, so it is checked to resolve as an sdist, and not built here.
"""

import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYENV = Path.home() / ".pyenv" / "versions"
# release: (CPython, glibc minor, extras install.sh installs there)
RELEASES = {"4.6": ("3.6", 27, ["jetson"]), "5": ("3.8", 31, ["jetson", "cpu-runtimes"]),
            "6": ("3.10", 35, ["jetson", "cpu-runtimes"])}
BUILT_ON_THE_DEVICE = {"pycuda"}  # compiles against JetPack's CUDA (nvcc); the install builds it there


def setup_requirements(extras: List[str]) -> List[str]:
    """install_requires and the named extras, as setup.py passes them to setup()."""
    import runpy

    import setuptools

    captured: Dict[str, object] = {}
    original = setuptools.setup
    setuptools.setup = lambda **arguments: captured.update(arguments)
    try:
        runpy.run_path(str(ROOT / "setup.py"))
    finally:
        setuptools.setup = original
    requirements = list(captured["install_requires"])
    for extra in extras:
        requirements += captured["extras_require"][extra]
    return requirements


def platforms(glibc_minor: int) -> List[str]:
    tags = ["--platform", "manylinux2014_aarch64"]
    for minor in range(17, glibc_minor + 1):
        tags += ["--platform", f"manylinux_2_{minor}_aarch64"]
    return tags


def project_name(filename: str) -> str:
    """The distribution name of a wheel or sdist file, normalized (PEP 503)."""
    stem = re.sub(r"\.(whl|tar\.gz|zip|tar\.bz2)$", "", filename)
    name = stem.split("-")[0] if filename.endswith(".whl") else stem.rsplit("-", 1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def version_of(filename: str) -> str:
    stem = re.sub(r"\.(whl|tar\.gz|zip|tar\.bz2)$", "", filename)
    return stem.split("-")[1] if filename.endswith(".whl") else stem.rsplit("-", 1)[1]


def target_pip(tmp_path: Path, version: str) -> List[str]:
    found = sorted(PYENV.glob(f"{version}.*/bin/python3"))
    if not found:
        pytest.skip(f"no CPython {version} under {PYENV}")
    venv = tmp_path / f"venv{version}"
    subprocess.run([str(found[-1]), "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    # What install.sh puts in the venv first: the last pip and setuptools for 3.6 (pyenv's pip 18.1
    # cannot fetch for another platform), and wheel, which setup.py-only sdists build with.
    tools = ["pip<22", "setuptools<60", "wheel<0.38"] if version == "3.6" else ["pip", "setuptools", "wheel"]
    subprocess.run(pip + ["install", "--upgrade", *tools], check=True, capture_output=True, timeout=600)
    return pip


@pytest.mark.parametrize("release", sorted(RELEASES), ids=[f"jetpack{r}" for r in sorted(RELEASES)])
def test_the_jetson_requirements_resolve_for_the_releases_python_on_aarch64(tmp_path, release):
    version, glibc_minor, extras = RELEASES[release]
    pip = target_pip(tmp_path, version)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(setup_requirements(extras)) + "\n")
    constraints = ROOT / "scripts" / "constraints" / f"jetpack-{release}.txt"
    picked = tmp_path / "picked"
    # 1. What pip picks, markers evaluated by the release's own CPython (sdists allowed here).
    result = subprocess.run(pip + ["download", "-d", str(picked), "-c", str(constraints), "-r", str(requirements)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"JetPack {release}: {result.stderr.strip().splitlines()[-1:]}"
    files = sorted(path.name for path in picked.iterdir())
    print(f"JetPack {release} (CPython {version}, glibc 2.{glibc_minor}): {len(files)} distributions")
    problems = []
    for filename in files:
        name, pinned = project_name(filename), version_of(filename)
        if not filename.endswith(".whl"):
            if name in BUILT_ON_THE_DEVICE:
                print(f"  {name} {pinned}: sdist, built on the device against CUDA (not here)")
                continue
            # 2a. An sdist must build here, on that CPython, into a pure wheel.
            built = tmp_path / "built"
            wheel = subprocess.run(pip + ["wheel", "--no-deps", "-w", str(built), str(picked / filename)],
                                   capture_output=True, text=True, timeout=600)
            made = sorted(built.glob(f"{filename.split('-')[0].replace('-', '_')}*.whl")) + \
                sorted(built.glob(f"{re.sub(r'[-.]', '_', name)}*.whl"))
            if wheel.returncode != 0 or not made:
                problems.append(f"{name} {pinned}: the sdist does not build on CPython {version}")
            elif not made[0].name.endswith("-none-any.whl"):
                problems.append(f"{name} {pinned}: sdist only, and not pure Python ({made[0].name})")
            else:
                print(f"  {name} {pinned}: pure-Python sdist, builds on CPython {version}")
            continue
        # 2b. A wheel: the same version must exist for aarch64 at this glibc (or be pure).
        fetched = tmp_path / "aarch64"
        again = subprocess.run(pip + ["download", "--no-deps", "--only-binary=:all:", "-d", str(fetched),
                                      "--python-version", version.replace(".", ""), "--implementation", "cp",
                                      *platforms(glibc_minor), f"{name}=={pinned}"],
                               capture_output=True, text=True, timeout=600)
        if again.returncode != 0:
            problems.append(f"{name} {pinned}: no wheel for CPython {version} on aarch64 with glibc 2.{glibc_minor}")
    assert not problems, f"JetPack {release}: " + "; ".join(problems)


def test_the_build_extra_resolves_for_jetpack_46s_python_on_aarch64(tmp_path):
    """[build] on the Nano: onnx must have a cp36 aarch64 wheel (1.12 and newer have none). torch
    comes from NVIDIA's wheel for the JetPack release (README), so only onnx is fetched here."""
    pip = target_pip(tmp_path, "3.6")
    onnx = [r for r in setup_requirements(["build"]) if r.startswith("onnx")]
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(onnx) + "\n")
    result = subprocess.run(pip + ["download", "--no-deps", "--only-binary=:all:", "-d", str(tmp_path / "w"),
                                   "--python-version", "36", "--implementation", "cp", *platforms(27),
                                   "-r", str(requirements)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"onnx for CPython 3.6 on aarch64: {result.stderr.strip().splitlines()[-1:]}"
    assert [p.name.split("-")[0] for p in (tmp_path / "w").iterdir()] == ["onnx"]


def test_setup_requirements_reads_setup_py():
    jetson = setup_requirements(["jetson"])
    assert any(r.startswith("numpy") for r in jetson) and any(r.startswith("pycuda") for r in jetson)
    runtimes = setup_requirements(["cpu-runtimes"])
    assert not any(r.startswith("opencv-python") for r in runtimes)  # a Jetson's cv2 is JetPack's
    assert setup_requirements(["cpu"]) == runtimes + ["opencv-python>=4.5"]
    assert project_name("paho-mqtt-1.6.1.tar.gz") == "paho-mqtt"
    assert project_name("PyYAML-6.0.1-cp36-cp36m-manylinux_2_17_aarch64.manylinux2014_aarch64.whl") == "pyyaml"
    assert version_of("prometheus_client-0.17.1-py3-none-any.whl") == "0.17.1"
    assert sys.version_info >= (3, 8)
