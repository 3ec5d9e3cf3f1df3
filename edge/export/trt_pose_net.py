"""trt_pose's networks, written here so that NVIDIA's published checkpoints load by name
without trt_pose or torchvision installed.

    resnet18_baseline_att     224x224 input, ResNet-18 features (512 ch at 1/32)
    densenet121_baseline_att  256x256 input, DenseNet-121 features (1024 ch at 1/32)

Both end in the attention head: for cmap and paf each, three transposed-conv upsampling
stages (ConvTranspose 4x4 stride 2, BatchNorm, ReLU) to 1/4 of the input, a 3x3 attention
conv (sigmoid for cmap, tanh for paf) that multiplies the features, then a 1x1 conv to 18
part maps and 42 affinity-field channels. Parameter names match trt_pose's modules:
`0.resnet.*` / `0.densenet.features.*` for the backbone, `1.cmap_up.*`, `1.cmap_att.*`,
`1.cmap_conv.*` (and the paf ones) for the head. The backbones' ImageNet classifiers are
in the checkpoints but unused, so they are skipped on load.
"""


from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import torch
from torch import nn

from edge.decoding.trt_pose import PAF_CHANNELS
from edge.errors import ModelError
from edge.export.checkpoints import load_by_name
from edge.types import NUM_KEYPOINTS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TrtPoseArch:
    name: str
    input_size: int
    feature_channels: int


ARCHITECTURES: Dict[str, TrtPoseArch] = {
    "resnet18_baseline_att": TrtPoseArch("resnet18_baseline_att", 224, 512),
    "densenet121_baseline_att": TrtPoseArch("densenet121_baseline_att", 256, 1024),
}


# -- ResNet-18 (torchvision's layout and names) ----------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNet18Features(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        in_channels = 64
        for index, channels in enumerate((64, 128, 256, 512)):
            stride = 1 if index == 0 else 2
            stages.append(nn.Sequential(BasicBlock(in_channels, channels, stride), BasicBlock(channels, channels, 1)))
            in_channels = channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ResNetBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18Features()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnet(x)


# -- DenseNet-121 (torchvision's layout and names) -------------------------------------------------

class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int = 32, bottleneck: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bottleneck * growth, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bottleneck * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bottleneck * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))
        return torch.cat([x, new], 1)


class Transition(nn.Sequential):
    def __init__(self, in_channels: int) -> None:
        super().__init__(OrderedDict([
            ("norm", nn.BatchNorm2d(in_channels)), ("relu", nn.ReLU(inplace=True)),
            ("conv", nn.Conv2d(in_channels, in_channels // 2, 1, 1, bias=False)), ("pool", nn.AvgPool2d(2, 2))]))


def densenet121_features() -> nn.Sequential:
    layers: "OrderedDict[str, nn.Module]" = OrderedDict([
        ("conv0", nn.Conv2d(3, 64, 7, 2, 3, bias=False)), ("norm0", nn.BatchNorm2d(64)),
        ("relu0", nn.ReLU(inplace=True)), ("pool0", nn.MaxPool2d(3, 2, 1))])
    channels = 64
    block_sizes = (6, 12, 24, 16)
    for block_index, size in enumerate(block_sizes, start=1):
        block = nn.Sequential(OrderedDict(
            (f"denselayer{i + 1}", DenseLayer(channels + i * 32)) for i in range(size)))
        layers[f"denseblock{block_index}"] = block
        channels += size * 32
        if block_index < len(block_sizes):
            layers[f"transition{block_index}"] = Transition(channels)
            channels //= 2
    layers["norm5"] = nn.BatchNorm2d(channels)  # trt_pose uses `features`: no ReLU after norm5
    return nn.Sequential(layers)


class DenseNetBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.densenet = nn.Module()
        self.densenet.features = densenet121_features()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.densenet.features(x)


# -- the attention head ---------------------------------------------------------------------------

def upsample_stages(in_channels: int, channels: int, count: int) -> nn.Sequential:
    layers = []
    for index in range(count):
        layers += [nn.ConvTranspose2d(in_channels if index == 0 else channels, channels, 4, 2, 1),
                   nn.BatchNorm2d(channels), nn.ReLU()]
    return nn.Sequential(*layers)


class CmapPafAttentionHead(nn.Module):
    def __init__(self, in_channels: int, cmap_channels: int = NUM_KEYPOINTS, paf_channels: int = PAF_CHANNELS,
                 channels: int = 256, upsample_count: int = 3) -> None:
        super().__init__()
        self.cmap_up = upsample_stages(in_channels, channels, upsample_count)
        self.paf_up = upsample_stages(in_channels, channels, upsample_count)
        self.cmap_att = nn.Conv2d(channels, channels, 3, 1, 1)
        self.paf_att = nn.Conv2d(channels, channels, 3, 1, 1)
        self.cmap_conv = nn.Conv2d(channels, cmap_channels, 1, 1, 0)
        self.paf_conv = nn.Conv2d(channels, paf_channels, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        cmap_features = self.cmap_up(x)
        paf_features = self.paf_up(x)
        cmap = self.cmap_conv(cmap_features * torch.sigmoid(self.cmap_att(cmap_features)))
        paf = self.paf_conv(paf_features * torch.tanh(self.paf_att(paf_features)))
        return cmap, paf


def build_trt_pose(name: str) -> nn.Sequential:
    """The network, randomly initialised, in eval mode; input [1, 3, S, S] normalised RGB."""
    if name not in ARCHITECTURES:
        raise ModelError(f"unknown trt_pose architecture '{name}': use one of {', '.join(ARCHITECTURES)}")
    arch = ARCHITECTURES[name]
    backbone = ResNetBackbone() if name.startswith("resnet") else DenseNetBackbone()
    return nn.Sequential(backbone, CmapPafAttentionHead(arch.feature_channels)).eval()


def load_trt_pose(name: str, checkpoint: Path) -> nn.Sequential:
    """trt_pose's network with a published checkpoint's weights (a plain state dict .pth)."""
    from edge.export.checkpoints import load_checkpoint

    model = build_trt_pose(name)
    state = load_checkpoint(checkpoint)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{checkpoint} is not a trt_pose state dict (found {type(state).__name__})")
    load_by_name(model, state, str(checkpoint), ignore=(r"^0\.resnet\.fc\.", r"^0\.densenet\.classifier\."),
                 # torchvision checkpoints before 0.3 named dense layers norm.1, conv.2, ...
                 rename=((r"(denselayer\d+)\.(norm|relu|conv)\.(\d)", r"\1.\2\3"),))
    return model.eval()
