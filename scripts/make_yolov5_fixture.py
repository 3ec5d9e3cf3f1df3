"""Make tests/data/yolov5_upstream/: tiny YOLOv5 checkpoints and the outputs upstream's own code
computes for them, for tests/test_build.py to compare edge/export/yolov5_net.py against.

Run once, in a throwaway environment that has the upstream code (never in the project's venv,
and the upstream code is not committed):

    python3 -m venv /tmp/y5 && /tmp/y5/bin/pip install torch torchvision && \
        /tmp/y5/bin/pip install --no-deps yolov5==7.0.14 && /tmp/y5/bin/pip install pandas pyyaml \
        opencv-python-headless requests tqdm matplotlib seaborn psutil gitpython pillow
    /tmp/y5/bin/python scripts/make_yolov5_fixture.py tests/data/yolov5_upstream

Three networks, each a release .pt as upstream saves one ({"model": the pickled model in
FP16}), with BatchNorm statistics drawn so that eps matters (small running variances):
- v7: yolov5's v7.0 layer table (C3, SPPF, SiLU), built by the yolov5 7.0.14 package;
- v7_relu: the same with the yaml's `activation: nn.ReLU()` (v7.0's key);
- v5: the v5.0 layer table (Focus, BottleneckCSP, SPP) with BottleneckCSP's activation after its
  BatchNorm set to LeakyReLU(0.1), as the v4.0-v6.0 code has it (the 7.0 package has SiLU there).
The expected outputs are the decoded head ([1, N, 5 + nc]) of upstream's model in eval mode on
a seeded input, from the FP16 weights read back as float32 (what the build script loads).
"""

import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
HEAD = [[-1, 1, "Conv", [512, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 6], 1, "Concat", [1]],
        [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [256, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 4], 1, "Concat", [1]], [-1, 3, "C3", [256, False]], [-1, 1, "Conv", [256, 3, 2]],
        [[-1, 14], 1, "Concat", [1]], [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [512, 3, 2]],
        [[-1, 10], 1, "Concat", [1]], [-1, 3, "C3", [1024, False]], [[17, 20, 23], 1, "Detect", ["nc", "anchors"]]]
V7 = {"nc": 2, "depth_multiple": 0.33, "width_multiple": 0.03125, "anchors": ANCHORS,
      "backbone": [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C3", [128]],
                   [-1, 1, "Conv", [256, 3, 2]], [-1, 6, "C3", [256]], [-1, 1, "Conv", [512, 3, 2]],
                   [-1, 9, "C3", [512]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C3", [1024]],
                   [-1, 1, "SPPF", [1024, 5]]],
      "head": HEAD}
V5 = {"nc": 2, "depth_multiple": 0.33, "width_multiple": 0.03125, "anchors": ANCHORS,
      "backbone": [[-1, 1, "Focus", [64, 3]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "BottleneckCSP", [128]],
                   [-1, 1, "Conv", [256, 3, 2]], [-1, 9, "BottleneckCSP", [256]], [-1, 1, "Conv", [512, 3, 2]],
                   [-1, 9, "BottleneckCSP", [512]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 1, "SPP", [1024, [5, 9, 13]]],
                   [-1, 3, "BottleneckCSP", [1024, False]]],
      "head": [[row[0], row[1], "BottleneckCSP" if row[2] == "C3" else row[2], row[3]] for row in HEAD]}
INPUT_SIZE = 64


def randomise(model: nn.Module, generator: torch.Generator) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.weight.data = torch.rand(channels, generator=generator) * 0.15 + 0.05  # no blow-up in depth
            module.bias.data = torch.randn(channels, generator=generator) * 0.3
            module.running_mean = torch.randn(channels, generator=generator) * 0.2
            # Small variances, as trained detectors have in places: eps 1e-5 vs 1e-3 then matters.
            module.running_var = torch.rand(channels, generator=generator) * 0.01 + 0.001


def make(name: str, description: dict, out: Path, generator: torch.Generator) -> dict:
    from yolov5.models.common import BottleneckCSP, Conv
    from yolov5.models.yolo import Model

    Conv.default_act = nn.SiLU()  # upstream's parse_model sets this class attribute from `activation:`
    model = Model(copy.deepcopy(description), ch=3, nc=description["nc"])
    if name == "v5":
        for module in model.modules():
            if isinstance(module, BottleneckCSP):
                module.act = nn.LeakyReLU(0.1)
    randomise(model, generator)
    model = model.half().float().eval()  # the weights as a release file keeps them
    image = torch.rand(1, 3, INPUT_SIZE, INPUT_SIZE, generator=generator)
    with torch.no_grad():
        expected = model(image)[0]
    checkpoint = out / f"{name}.pt"
    torch.save({"model": copy.deepcopy(model).half(), "epoch": -1}, checkpoint)
    np.savez_compressed(out / f"{name}.npz", image=image.numpy(), expected=expected.numpy())
    eps = sorted({m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d)})
    return {"checkpoint": checkpoint.name, "outputs": f"{name}.npz", "bn_eps": eps,
            "output_shape": list(expected.shape)}


def main() -> None:
    import yolov5

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(20261204)
    relu = dict(V7, activation="nn.ReLU()")
    made = {name: make(name, description, out, generator)
            for name, description in (("v7", V7), ("v7_relu", relu), ("v5", V5))}
    made["_made_with"] = {"yolov5": yolov5.__version__, "torch": torch.__version__, "input_size": INPUT_SIZE}
    (out / "MANIFEST.json").write_text(json.dumps(made, indent=2) + "\n")
    print(json.dumps(made, indent=2))


if __name__ == "__main__":
    main()
