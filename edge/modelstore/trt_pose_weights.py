"""trt_pose's pretrained weights: fetched on the device from the links in trt_pose's README
(the device has internet; this project's machines do not reach them), verified by git blob id
before use. No PyPI package ships them, and their licence (MIT, NVIDIA) allows the download,
not committing them here.

A git blob id is sha1(b"blob <size>\\0" + content): the id git gives the file in any repository
that holds it, so the same weights are recognised in the several public copies that carry them.
"""

import hashlib
import logging
import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

from tqdm import tqdm

from edge.errors import ModelError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class TrtPoseWeights:
    name: str  # the architecture and training variant, as trt_pose's README names it
    file: str  # under models/
    url: str
    git_blob_id: str


# Google Drive's direct-download form of the README's links (confirm=t skips the page that warns
# a large file was not virus-scanned).
_DRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="
TRT_POSE_WEIGHTS: Tuple[TrtPoseWeights, ...] = (
    TrtPoseWeights("resnet18_baseline_att_224x224_A", "resnet18_baseline_att_224x224_A_epoch_249.pth",
                   _DRIVE + "1XYDdCUdiF2xxx4rznmLb62SdOUZuoNbd", "35707fafe92b22d8c3d84b34676d095bba4080c0"),
    TrtPoseWeights("densenet121_baseline_att_256x256_B", "densenet121_baseline_att_256x256_B_epoch_160.pth",
                   _DRIVE + "13FkJkx7evQ1WwP54UmdiDXWyFMY1OxDU", "cfe81a7a4bdd77591b1eb8e78096c2b6bfe99c7c"),
)


def git_blob_id(path: Path) -> str:
    """The id `git hash-object` gives the file."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_for(path: Path) -> Optional[TrtPoseWeights]:
    """The known weights a file is named for, if any."""
    return next((weights for weights in TRT_POSE_WEIGHTS if path.name == weights.file), None)


def verify_trt_pose_weights(path: Path, weights: Optional[TrtPoseWeights] = None) -> None:
    """Raise ModelError with the reason when a file named for known weights is not them."""
    weights = weights or weights_for(path)
    if weights is None:
        return
    found = git_blob_id(path)
    if found != weights.git_blob_id:
        with path.open("rb") as handle:
            head = handle.read(64).lstrip().lower()
        why = ("it is a web page, not the weights (the download was refused or redirected)"
               if head.startswith((b"<!doctype", b"<html")) else "the file differs from trt_pose's release")
        raise ModelError(f"{path} is not trt_pose's {weights.name}: git blob id {found}, expected "
                         f"{weights.git_blob_id}; {why}: delete it and run fall-edge fetch-models --trt-pose "
                         f"{weights.name}")


def fetch_trt_pose_weights(weights: TrtPoseWeights, models_dir: Path,
                           opener: Callable[..., object] = urllib.request.urlopen) -> Path:
    """Download the weights into models_dir (kept if already there and verified), verify them
    by git blob id, and only then give them their name."""
    target = models_dir / weights.file
    if target.is_file():
        try:
            verify_trt_pose_weights(target, weights)
            logger.info("%s: present, git blob id ok", target.name)
            return target
        except ModelError:
            logger.warning("%s does not match its git blob id; fetching it again", target)
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    logger.info("downloading trt_pose %s from %s ...", weights.name, weights.url.split("?")[0])
    try:
        with opener(weights.url, timeout=60) as response, partial.open("wb") as handle:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, desc=f"  {weights.file}", unit="B", unit_scale=True, unit_divisor=1024,
                      file=sys.stderr, mininterval=0.5, leave=False) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    handle.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        if partial.exists():
            partial.unlink()
        raise ModelError(f"could not download trt_pose {weights.name} ({exc}): check the network, or download "
                         f"it from trt_pose's README by hand to {target}") from None
    try:
        verify_trt_pose_weights(partial, weights)
    except ModelError as exc:
        partial.unlink()
        raise ModelError(str(exc).replace(str(partial), f"the download of {weights.file}")) from None
    shutil.move(str(partial), str(target))
    logger.info("%s: fetched, git blob id ok", target.name)
    return target
