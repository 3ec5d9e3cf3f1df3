"""YOLOv5 (releases 5.0 to 7.0) rebuilt from the model description stored in its own checkpoint.

An official `.pt` holds the whole pickled model, including `model.yaml` (the layer table:
from, repeats, module, args) and its names. This module reads that table, builds the same
network from its own small set of layers (Conv, C3, BottleneckCSP, Bottleneck, SPPF, SPP,
Focus, Concat, Upsample, Detect), and loads the weights by name (`model.<i>.<...>`), so no
yolov5 code, torchvision or network access is needed.

The exported head gives [1, N, 5 + nc]: box centre, size (input pixels), objectness and
class scores after the sigmoid, the layout edge.decoding.yolo calls `yolov5`.

Numerics the state dict does not hold are taken as upstream has them: every BatchNorm's eps
and each activation come from the checkpoint's pickled modules where it has them (a release
or training .pt holds the module objects), else from the release rules: eps 1e-3 on every
BatchNorm (upstream's initialize_weights), SiLU in Conv unless the yaml's `activation:` (v7.0)
says otherwise, LeakyReLU(0.1) after BottleneckCSP's BatchNorm (v4.0 to v6.0; SiLU from v6.1,
whose files say so in their pickled modules).
"""


import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from edge.errors import ModelError
from edge.export.checkpoints import load_by_name, load_checkpoint

logger = logging.getLogger(__name__)

UPSTREAM_BN_EPS = 1e-3  # utils/torch_utils.initialize_weights, on every BatchNorm2d
# BottleneckCSP's activation after its BatchNorm from v4.0 to v6.0 (v6.1 made it SiLU).
CSP_LEAKY_SLOPE = 0.1
# The activations a checkpoint or a yaml may name, with the attribute each needs.
_ACTIVATIONS: Dict[str, Callable[..., nn.Module]] = {
    "SiLU": lambda: nn.SiLU(), "LeakyReLU": lambda slope=0.01: nn.LeakyReLU(float(slope)),
    "ReLU": lambda: nn.ReLU(), "ReLU6": lambda: nn.ReLU6(), "Hardswish": lambda: nn.Hardswish(),
    "Sigmoid": lambda: nn.Sigmoid(), "Tanh": lambda: nn.Tanh(), "Identity": lambda: nn.Identity(),
    "GELU": lambda: nn.GELU(), "Mish": lambda: nn.Mish(),
}
_YAML_KEYS = {"nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head", "ch", "activation"}


def _pad(kernel: int, padding: Optional[int]) -> int:
    return kernel // 2 if padding is None else padding


class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm + SiLU."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, p: Optional[int] = None, g: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, _pad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c_out * e)
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = Conv(hidden, c_out, 3, 1, g=g)
        self.add = shortcut and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.cv2(self.cv1(x))
        return x + out if self.add else out


class C3(nn.Module):
    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c_out * e)
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = Conv(c_in, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c_out, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class BottleneckCSP(nn.Module):
    """Release 5.0 and earlier."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c_out * e)
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = nn.Conv2d(c_in, hidden, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(hidden, hidden, 1, 1, bias=False)
        self.cv4 = Conv(2 * hidden, c_out, 1, 1)
        self.bn = nn.BatchNorm2d(2 * hidden)
        self.act = nn.SiLU()
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.cv3(self.m(self.cv1(x)))
        y2 = self.cv2(x)
        return self.cv4(self.act(self.bn(torch.cat((y1, y2), 1))))


class SPPF(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int = 5) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = Conv(hidden * 4, c_out, 1, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class SPP(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden, 1, 1)
        self.cv2 = Conv(hidden * (len(k) + 1), c_out, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(size, 1, size // 2) for size in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [pool(x) for pool in self.m], 1))


class Focus(nn.Module):
    """Release 5.0 and earlier: space-to-depth, then a Conv."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, p: Optional[int] = None, g: int = 1) -> None:
        super().__init__()
        self.conv = Conv(c_in * 4, c_out, k, s, p, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


class Concat(nn.Module):
    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, xs: List[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.d)


class Detect(nn.Module):
    """Per level: a 1x1 conv to anchors x (5 + nc); decoded to input pixels for export."""

    def __init__(self, nc: int, anchors: Union[int, Sequence[Sequence[float]]], ch: Sequence[int]) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(ch)
        if isinstance(anchors, int):  # autoanchor: the real ones come with the weights
            anchors = [[0.0] * (2 * anchors)] * self.nl
        self.na = len(anchors[0]) // 2
        # In anchor units of each level's stride, as stored in the checkpoints.
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self.stride = torch.ones(self.nl)

    def forward(self, xs: List[torch.Tensor]) -> torch.Tensor:
        outputs = []
        for level, x in enumerate(xs):
            x = self.m[level](x)
            batch, _, height, width = x.shape
            y = x.view(batch, self.na, self.no, height, width).permute(0, 1, 3, 4, 2).sigmoid()
            grid_y, grid_x = torch.meshgrid(torch.arange(height, dtype=y.dtype), torch.arange(width, dtype=y.dtype),
                                            indexing="ij")
            grid = torch.stack((grid_x, grid_y), 2).view(1, 1, height, width, 2) - 0.5
            anchor_grid = (self.anchors[level] * self.stride[level]).view(1, self.na, 1, 1, 2)
            xy = (y[..., 0:2] * 2 + grid) * self.stride[level]
            wh = (y[..., 2:4] * 2) ** 2 * anchor_grid
            outputs.append(torch.cat((xy, wh, y[..., 4:]), -1).view(batch, -1, self.no))
        return torch.cat(outputs, 1)


_MODULES = {"Conv": Conv, "C3": C3, "BottleneckCSP": BottleneckCSP, "Bottleneck": Bottleneck, "SPPF": SPPF,
            "SPP": SPP, "Focus": Focus, "Concat": Concat, "Detect": Detect, "nn.Upsample": nn.Upsample}
_CHANNEL_MODULES = {"Conv", "C3", "BottleneckCSP", "Bottleneck", "SPPF", "SPP", "Focus"}
_REPEAT_INSIDE = {"C3", "BottleneckCSP"}


def _make_divisible(value: float, divisor: int = 8) -> int:
    return int(math.ceil(value / divisor) * divisor)


def yaml_activation(text: str) -> nn.Module:
    """v7.0's `activation:` key (e.g. "nn.LeakyReLU(0.1)", which upstream eval()s): parsed, not run."""
    match = re.fullmatch(r"\s*(?:nn\.|torch\.nn\.)?(\w+)\(\s*([-+0-9.eE]*)\s*\)\s*", str(text))
    if match is None or match.group(1) not in _ACTIVATIONS:
        raise ModelError(f"the YOLOv5 yaml's activation {text!r} is not one this build script knows "
                         f"({', '.join(sorted(_ACTIVATIONS))}): export the model to ONNX with the yolov5 repository "
                         f"and pass the .onnx")
    name, argument = match.groups()
    return _ACTIVATIONS[name](float(argument)) if argument else _ACTIVATIONS[name]()


def _activation_like(module: nn.Module, where: str) -> nn.Module:
    """A fresh activation equal to a pickled one (the pickled object itself is not kept)."""
    name = type(module).__name__
    if name not in _ACTIVATIONS:
        raise ModelError(f"the checkpoint's {where} uses the activation {name}, which this build script does not "
                         f"know: export the model to ONNX with the yolov5 repository and pass the .onnx")
    if name == "LeakyReLU":
        return nn.LeakyReLU(float(module.negative_slope))
    return _ACTIVATIONS[name]()


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def apply_release_rules(model: "YoloV5", description: Dict[str, Any]) -> None:
    """What upstream's code sets and the weights do not carry, for a checkpoint without its modules."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = UPSTREAM_BN_EPS
        if isinstance(module, BottleneckCSP):
            module.act = nn.LeakyReLU(CSP_LEAKY_SLOPE)
    if description.get("activation"):
        for module in model.modules():
            if isinstance(module, Conv) and not isinstance(module.act, nn.Identity):
                module.act = yaml_activation(description["activation"])


def copy_numerics(model: "YoloV5", pickled: nn.Module) -> int:
    """BatchNorm eps and activations from the checkpoint's own modules, by name; returns how many
    were taken. Names the rebuilt network lacks are left (load_by_name checks the weights)."""
    ours = dict(model.named_modules())
    taken = 0
    for name, theirs in pickled.named_modules():
        mine = ours.get(name)
        if mine is None or not name:
            continue
        if isinstance(theirs, nn.BatchNorm2d) and isinstance(mine, nn.BatchNorm2d):
            mine.eps = float(theirs.eps)
            taken += 1
        elif type(theirs).__name__ in _ACTIVATIONS or (type(mine).__name__ in _ACTIVATIONS
                                                       and type(theirs).__module__.startswith("torch.nn")):
            _replace(model, name, _activation_like(theirs, name))
            taken += 1
    return taken


class YoloV5(nn.Module):
    """The network described by a yolov5 model yaml (as a dict), with upstream's numerics
    (apply_release_rules; load_yolov5 then takes them from the checkpoint where it has them)."""

    def __init__(self, description: Dict[str, Any]) -> None:
        super().__init__()
        unknown = sorted(str(key) for key in description if key not in _YAML_KEYS)
        if unknown:
            logger.warning("YOLOv5 yaml keys not used by this build script: %s (check the exported model against "
                           "the yolov5 repository's)", ", ".join(unknown))
        nc = int(description["nc"])
        depth, width = float(description["depth_multiple"]), float(description["width_multiple"])
        anchors = description["anchors"]
        names = {"nc": nc, "anchors": anchors, "None": None}
        channels = [int(description.get("ch", 3))]
        layers: List[nn.Module] = []
        self.sources: List[Union[int, List[int]]] = []
        for index, (source, repeats, module_name, args) in enumerate(description["backbone"] + description["head"]):
            if module_name not in _MODULES:
                raise ModelError(f"YOLOv5 layer {index} is a {module_name}, which this build script does not know: "
                                 f"export the model to ONNX with the yolov5 repository and pass the .onnx")
            args = [names.get(a, a) if isinstance(a, str) else a for a in args]
            repeats = max(round(repeats * depth), 1) if repeats > 1 else repeats
            if module_name in _CHANNEL_MODULES:
                c_in, c_out = channels[source], args[0]
                c_out = _make_divisible(c_out * width)
                args = [c_in, c_out, *args[1:]]
                if module_name in _REPEAT_INSIDE:
                    args.insert(2, repeats)
                    repeats = 1
            elif module_name == "Concat":
                c_out = sum(channels[s] for s in source)
            elif module_name == "Detect":
                args = [args[0], args[1], [channels[s] for s in source]]
                c_out = 0
            else:
                c_out = channels[source]
            build = _MODULES[module_name]
            layer = nn.Sequential(*(build(*args) for _ in range(repeats))) if repeats > 1 else build(*args)
            layers.append(layer)
            self.sources.append(source)
            if index == 0:
                channels = []
            channels.append(c_out)
        self.model = nn.Sequential(*layers)
        detect = self.model[-1]
        if not isinstance(detect, Detect):
            raise ModelError("the YOLOv5 description does not end in a Detect layer")
        self.num_classes = nc
        self.input_channels = int(description.get("ch", 3))
        apply_release_rules(self, description)
        # Strides from one pass at 256x256, as yolov5 does it.
        with torch.no_grad():
            features = self._features(torch.zeros(1, self.input_channels, 256, 256))
        detect.stride = torch.tensor([256.0 / f.shape[-2] for f in features])

    def _run(self, x: torch.Tensor, stop_before_detect: bool) -> Any:
        saved: List[torch.Tensor] = []
        for layer, source in zip(self.model, self.sources):
            if source != -1:
                x = saved[source] if isinstance(source, int) else [x if s == -1 else saved[s] for s in source]
            if stop_before_detect and isinstance(layer, Detect):
                return x
            x = layer(x)
            saved.append(x)
        return x

    def _features(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self._run(x, stop_before_detect=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, stop_before_detect=False)


@dataclass
class YoloV5Checkpoint:
    model: YoloV5
    class_names: List[str]
    description: Dict[str, Any]


def load_yolov5(checkpoint: Path) -> YoloV5Checkpoint:
    """An official YOLOv5 .pt (training output or a release file) as a YoloV5 network in eval mode."""
    data = load_checkpoint(checkpoint)
    # Training checkpoints keep the averaged weights in `ema`; release files only `model`.
    pickled = (data.get("ema") or data.get("model")) if isinstance(data, dict) else data
    description = getattr(pickled, "yaml", None)
    if not isinstance(description, dict) or "backbone" not in description:
        raise ModelError(f"{checkpoint} holds no YOLOv5 model description (model.yaml): is it a YOLOv5 .pt? "
                         f"YOLOv8 .pt files need `pip install ultralytics`")
    model = YoloV5(description)
    state = pickled.state_dict()
    load_by_name(model, state, str(checkpoint), ignore=(r"\.anchor_grid$",))
    taken = copy_numerics(model, pickled)
    logger.info("%s: BatchNorm eps and activations of %d modules taken from the checkpoint", checkpoint, taken)
    names = getattr(pickled, "names", None) or [f"class{i}" for i in range(model.num_classes)]
    if isinstance(names, dict):
        names = [names[key] for key in sorted(names)]
    return YoloV5Checkpoint(model.eval(), [str(n) for n in names], description)


def check_input_size(size: int) -> int:
    """YOLOv5's strides need a square input that is a multiple of 32."""
    if size % 32:
        raise ModelError(f"YOLOv5 input size {size} must be a multiple of 32 (e.g. 640 or 416)")
    return size
