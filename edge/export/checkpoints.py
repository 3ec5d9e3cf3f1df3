"""Loading PyTorch checkpoints safely and by parameter name.

Official YOLOv5 `.pt` files are pickles of whole models whose classes live in the yolov5
repository (`models.yolo.DetectionModel`, `models.common.Conv`, ...). Instead of needing that
code (and its torchvision and network habits), the unpickler here turns each of those
classes into an inert nn.Module shell that only keeps its parameters and attributes, and it
refuses every global outside a short allowlist, so a checkpoint cannot run code on load.
The real network is then rebuilt by this project and filled by parameter name.
"""


import functools
import inspect
import logging
import pickle
import re
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterable, Mapping

from edge.errors import ModelError

logger = logging.getLogger(__name__)

# Packages whose classes become shells: the yolov5 repository's layout, and the PyPI packages'.
_SHELL_PACKAGES = ("models", "utils", "yolov5", "ultralytics")
_SAFE_BUILTINS = {"set", "frozenset", "slice", "range", "complex", "bytearray", "tuple", "list", "dict", "int",
                  "float", "str", "bytes", "bool"}
_SAFE_GLOBALS = {("collections", "OrderedDict"), ("_codecs", "encode"), ("argparse", "Namespace"),
                 ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "Path"),
                 ("datetime", "datetime")}
_PY2_NAMES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_SAFE_TORCH_PREFIXES = ("torch._utils", "torch._tensor", "torch.nn.modules", "torch.nn.parameter", "torch.storage",
                        "torch.nn.utils")


@functools.lru_cache(maxsize=None)
def _shell_class(module: str, name: str) -> type:
    """An nn.Module subclass named like the original: it keeps parameters, buffers, submodules
    and plain attributes (yaml, names, stride) and cannot run."""
    import torch

    return type(name, (torch.nn.Module,), {"__module__": f"shell.{module}"})


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in _PY2_NAMES:  # protocol 2 pickles spell builtins the Python 2 way
            module = _PY2_NAMES[module]
        top = module.split(".")[0]
        if top in _SHELL_PACKAGES:
            return _shell_class(module, name)
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" or module.startswith(_SAFE_TORCH_PREFIXES):
            return super().find_class(module, name)
        if top == "numpy" and (name in ("_reconstruct", "ndarray", "dtype", "scalar") or module == "numpy.dtypes"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint (not an allowed type)")


def _restricted_load(file: Any, **options: Any) -> Any:
    return _RestrictedUnpickler(file, **options).load()


def _pickle_module() -> ModuleType:
    """What torch.load gets as pickle_module: every unpickling it does goes through the
    restricted unpickler. Its Unpickler reads zip-format checkpoints; its load() reads the
    legacy (pre-1.6) format's magic number, protocol and system info, which come first in the
    file and would otherwise be read by plain pickle, able to run code before any check."""
    module = ModuleType("fall_edge_restricted_pickle")
    module.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
    module.load = _restricted_load  # type: ignore[attr-defined]
    module.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
    return module


def load_checkpoint(path: Path) -> Any:
    """The unpickled checkpoint, with foreign model classes as parameter-holding shells."""
    import torch

    if not Path(path).is_file():
        raise ModelError(f"checkpoint {path} not found: check the path")
    _check_archive(Path(path))
    # weights_only=False lets our restricted unpickler decide (torch 2.6 made True the default);
    # PyTorch before 1.13 (JetPack 4.6) has no such argument.
    options = {"weights_only": False} if "weights_only" in inspect.signature(torch.load).parameters else {}
    try:
        return torch.load(str(path), map_location="cpu", pickle_module=_pickle_module(), **options)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"checkpoint {path}: {exc}") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise ModelError(f"checkpoint {path} cannot be read ({str(exc).splitlines()[0][:160]}): "
                         f"it may be truncated or not a PyTorch file") from None


def _check_archive(path: Path) -> None:
    """Checkpoints since PyTorch 1.6 are zip archives. A truncated or corrupt one can abort the
    whole process inside torch's C++ reader, so it is checked here first (CRC of every member)."""
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            return  # the older plain-pickle format: read by Python, errors are exceptions
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"checkpoint {path} cannot be read ({exc}): it is truncated or corrupt; "
                         f"download it again") from None
    if damaged is not None:
        raise ModelError(f"checkpoint {path} is corrupt ({damaged} fails its CRC): download it again")


def load_by_name(model: Any, state: Mapping[str, Any], source: str, ignore: Iterable[str] = (),
                 rename: Iterable[tuple] = ()) -> None:
    """Copy `state` into `model` by parameter name; every parameter and buffer the model needs
    must be there with the right shape (BatchNorm's num_batches_tracked may be absent).
    `ignore`: regexes of checkpoint keys the model does not use (a classifier head).
    `rename`: (regex, replacement) pairs applied to checkpoint keys first."""
    ignore_patterns = [re.compile(pattern) for pattern in ignore]
    renames = [(re.compile(pattern), replacement) for pattern, replacement in rename]
    cleaned: Dict[str, Any] = {}
    for key, value in state.items():
        for pattern, replacement in renames:
            key = pattern.sub(replacement, key)
        if not any(pattern.search(key) for pattern in ignore_patterns):
            cleaned[key] = value
    own = model.state_dict()
    missing = [k for k in own if k not in cleaned and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in cleaned if k not in own]
    wrong_shape = [f"{k} {tuple(cleaned[k].shape)} vs {tuple(own[k].shape)}" for k in own
                   if k in cleaned and tuple(cleaned[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong_shape:
        details = "; ".join(part for part in (
            f"missing {len(missing)} (e.g. {', '.join(missing[:3])})" if missing else "",
            f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})" if unexpected else "",
            f"wrong shape: {', '.join(wrong_shape[:3])}" if wrong_shape else "") if part)
        raise ModelError(f"{source} does not fit the {type(model).__name__} network: {details}. "
                         f"Check the architecture or model size chosen for it")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in cleaned.items()}, strict=False)
    logger.info("loaded %d tensors from %s", len(cleaned), source)
