"""The engine build script's steps that run without TensorRT: the networks and their
checkpoints, ONNX export with the parity check, calibration batches and cache, the engine
sidecar checks, the precision fallback, and the CPU's INT8 ONNX."""

import json
import os
import subprocess
import sys
import types
import zipfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch missing: scripts/bootstrap.sh --dev installs it")

from edge.backends.sidecar import EngineInfo, check_engine_fits, read_sidecar, sidecar_path, write_sidecar  # noqa: E402
from edge.config import BuildConfig, Config, DetectorConfig  # noqa: E402
from edge.decoding.letterbox import letterbox  # noqa: E402
from edge.decoding.preprocess import model_input  # noqa: E402
from edge.decoding.yolo import decode_yolo  # noqa: E402
from edge.errors import FallEdgeError, ModelError  # noqa: E402
from edge.export.build_engines import BuildRequest, build  # noqa: E402
from edge.export.calibration import CalibrationBatches, CalibrationCache, extract_frames  # noqa: E402
from edge.export.checkpoints import load_checkpoint  # noqa: E402
from edge.export.engine import choose_precision  # noqa: E402
from edge.export.onnx_export import check_parity, export_onnx  # noqa: E402
from edge.export.trt_pose_net import build_trt_pose, load_trt_pose  # noqa: E402
from edge.export.yolov5_net import YoloV5, load_yolov5  # noqa: E402

DATA = Path(__file__).parent / "data"
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
needs_vtest = pytest.mark.skipif(not VTEST.exists(), reason="opencv-doc's vtest.avi missing (bootstrap installs it)")
ROOT = Path(__file__).resolve().parents[1]
FALL_MODEL = ROOT / "models" / "fall_yolov8s.onnx"

# yolov5n's layer table (release 7.0), with 2 classes.
YOLOV5N = {
    "nc": 2, "depth_multiple": 0.33, "width_multiple": 0.25,
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]],
    "backbone": [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C3", [128]],
                 [-1, 1, "Conv", [256, 3, 2]], [-1, 6, "C3", [256]], [-1, 1, "Conv", [512, 3, 2]],
                 [-1, 9, "C3", [512]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C3", [1024]],
                 [-1, 1, "SPPF", [1024, 5]]],
    "head": [[-1, 1, "Conv", [512, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 6], 1, "Concat", [1]],
             [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [256, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
             [[-1, 4], 1, "Concat", [1]], [-1, 3, "C3", [256, False]], [-1, 1, "Conv", [256, 3, 2]],
             [[-1, 14], 1, "Concat", [1]], [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [512, 3, 2]],
             [[-1, 10], 1, "Concat", [1]], [-1, 3, "C3", [1024, False]],
             [[17, 20, 23], 1, "Detect", ["nc", "anchors"]]],
}


UPSTREAM = DATA / "yolov5_upstream"  # made by scripts/make_yolov5_fixture.py with the yolov5 7.0.14 package


@pytest.mark.parametrize("release", ["v7", "v7_relu", "v5"])
def test_yolov5_gives_upstreams_outputs(release):
    """Release .pt files saved by upstream's code (v7.0 layers; v7.0 with `activation: nn.ReLU()`;
    v5.0 layers with BottleneckCSP's LeakyReLU), BatchNorm variances small enough for eps to
    matter: the rebuilt network gives upstream's decoded outputs. With eps 1e-5 and SiLU
    everywhere (before issue 12) they differed by 61, 109 and 16 px."""
    expected = np.load(UPSTREAM / f"{release}.npz")
    checkpoint = load_yolov5(UPSTREAM / f"{release}.pt")
    with torch.no_grad():
        ours = checkpoint.model(torch.from_numpy(expected["image"])).numpy()
    assert ours.shape == expected["expected"].shape
    assert np.abs(ours - expected["expected"]).max() <= 1e-4 * np.abs(expected["expected"]).max()


@pytest.mark.parametrize("release", ["v7", "v7_relu", "v5"])
def test_yolov5_release_rules_alone_give_upstreams_outputs(release):
    """Weights without their modules (a bare state dict): eps 1e-3, the yaml's activation and
    BottleneckCSP's LeakyReLU come from the release rules, and still match upstream."""
    from edge.export.checkpoints import load_by_name

    expected = np.load(UPSTREAM / f"{release}.npz")
    pickled = load_checkpoint(UPSTREAM / f"{release}.pt")["model"]
    model = YoloV5(pickled.yaml)
    load_by_name(model, pickled.state_dict(), release, ignore=(r"\.anchor_grid$",))
    with torch.no_grad():
        ours = model.eval()(torch.from_numpy(expected["image"])).numpy()
    assert np.abs(ours - expected["expected"]).max() <= 1e-4 * np.abs(expected["expected"]).max()


def test_yolov5_yaml_activation_is_parsed_not_run_and_unknown_keys_warn(caplog):
    from edge.export.yolov5_net import yaml_activation

    assert isinstance(yaml_activation("nn.LeakyReLU(0.1)"), torch.nn.LeakyReLU)
    assert yaml_activation("nn.LeakyReLU(0.1)").negative_slope == pytest.approx(0.1)
    assert isinstance(yaml_activation("nn.SiLU()"), torch.nn.SiLU)
    for text in ("nn.Softsign()", "__import__('os').system('true')", "nn.LeakyReLU(x)"):
        with pytest.raises(ModelError, match="activation .* is not one this build script knows"):
            YoloV5(dict(YOLOV5N, activation=text))
    with caplog.at_level("WARNING", logger="edge.export.yolov5_net"):
        YoloV5(dict(YOLOV5N, kpt_shape=[17, 3]))
    assert "YOLOv5 yaml keys not used by this build script: kpt_shape" in caplog.text



def reference_keys(name):
    """name -> shape, as listed from the original code (trt_pose, yolov5) into tests/data."""
    keys = {}
    for line in (DATA / name).read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split(" ")
            keys[key] = tuple(int(d) for d in shape.split(",") if d)
    return keys


def own_keys(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def randomise_batchnorm(model, seed=0):
    """Non-trivial running statistics, so a wrong BatchNorm mapping shows in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model


def vtest_frames(count, step=40):
    from itertools import islice

    from edge.capture.opencv_source import iter_video_frames

    return list(islice(iter_video_frames(VTEST, step, seek=True), count))


# -- the networks ---------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["resnet18_baseline_att", "densenet121_baseline_att"])
def test_trt_pose_parameter_names_match_trt_pose(arch):
    """Every tensor of trt_pose's own model (listed from its code with torchvision) has the same
    name and shape here, except the unused ImageNet classifier."""
    theirs = reference_keys(f"trt_pose_{arch}_keys.txt")
    ours = own_keys(build_trt_pose(arch))
    unused = {k for k in theirs if k.startswith(("0.resnet.fc.", "0.densenet.classifier."))}
    assert unused  # the classifier is in their checkpoints ...
    assert {k: v for k, v in theirs.items() if k not in unused} == ours  # ... everything else matches


def test_yolov5_parameter_names_match_yolov5():
    theirs = reference_keys("yolov5s_nc2_keys.txt")
    description = dict(YOLOV5N, depth_multiple=0.33, width_multiple=0.5)  # yolov5s
    assert own_keys(YoloV5(description)) == theirs


def test_trt_pose_checkpoint_loads_by_name(tmp_path):
    source = randomise_batchnorm(build_trt_pose("resnet18_baseline_att"))
    state = dict(source.state_dict())
    state["0.resnet.fc.weight"], state["0.resnet.fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    torch.save(state, tmp_path / "resnet18_baseline_att_224x224_A_epoch_249.pth")
    loaded = load_trt_pose("resnet18_baseline_att", tmp_path / "resnet18_baseline_att_224x224_A_epoch_249.pth")
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        for ours, theirs in zip(loaded(x), source.eval()(x)):
            assert torch.equal(ours, theirs)
    with pytest.raises(ModelError, match="does not fit the Sequential network: missing"):
        load_trt_pose("densenet121_baseline_att", tmp_path / "resnet18_baseline_att_224x224_A_epoch_249.pth")


def test_old_torchvision_densenet_names_are_renamed(tmp_path):
    source = build_trt_pose("densenet121_baseline_att")
    old_style = {k.replace("denselayer1.norm1", "denselayer1.norm.1").replace("denselayer1.conv2",
                                                                              "denselayer1.conv.2"): v
                 for k, v in source.state_dict().items()}
    assert any("norm.1" in k for k in old_style)
    torch.save(old_style, tmp_path / "densenet121_baseline_att.pth")
    load_trt_pose("densenet121_baseline_att", tmp_path / "densenet121_baseline_att.pth")


def official_format_checkpoint(model, path):
    """Save `model` the way yolov5's train.py does: the whole model pickled, its classes living in
    the repository's `models.common` / `models.yolo` modules (registered here for the pickler)."""
    saved = {}
    for module_name in ("models", "models.common", "models.yolo"):
        saved[module_name] = sys.modules.get(module_name)
        sys.modules[module_name] = types.ModuleType(module_name)
    try:
        rehomed = {}
        for layer in model.modules():
            cls = type(layer)
            if cls.__module__.startswith("edge."):
                if cls not in rehomed:
                    home = "models.yolo" if cls.__name__ in ("YoloV5", "Detect") else "models.common"
                    name = "DetectionModel" if cls.__name__ == "YoloV5" else cls.__name__
                    rehomed[cls] = type(name, (cls,), {"__module__": home, "__qualname__": name})
                    setattr(sys.modules[home], name, rehomed[cls])
                layer.__class__ = rehomed[cls]
        model.yaml = YOLOV5N
        model.names = {0: "Normal", 1: "Fall"}
        torch.save({"epoch": -1, "model": model.half(), "ema": None, "optimizer": None, "opt": {"imgsz": 640}},
                   path)
    finally:
        for module_name, module in saved.items():
            if module is None:
                sys.modules.pop(module_name, None)
            else:
                sys.modules[module_name] = module


def test_yolov5_checkpoint_in_the_official_format_loads_without_yolov5(tmp_path):
    original = randomise_batchnorm(YoloV5(YOLOV5N).eval())
    x = torch.rand(1, 3, 320, 320)
    half_weights = YoloV5(YOLOV5N).eval()
    half_weights.load_state_dict({k: v.half().float() for k, v in original.state_dict().items()})
    with torch.no_grad():
        expected = half_weights(x)
    official_format_checkpoint(original, tmp_path / "fall.pt")
    with zipfile.ZipFile(tmp_path / "fall.pt") as archive:  # the classes are pickled by their yolov5 names
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"models.common" in pickled and b"DetectionModel" in pickled and b"edge.export" not in pickled
    checkpoint = load_yolov5(tmp_path / "fall.pt")
    assert checkpoint.class_names == ["Normal", "Fall"]
    with torch.no_grad():
        got = checkpoint.model(x)
    assert got.shape == (1, 3 * (40 * 40 + 20 * 20 + 10 * 10), 7)
    assert torch.allclose(got, expected, atol=1e-4)


def test_a_checkpoint_that_runs_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    torch.save({"model": Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="refusing to load (posix|os).system"):
        load_checkpoint(tmp_path / "evil.pt")
    whole = (tmp_path / "evil.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ModelError, match="cannot be read .*truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    damaged = bytearray(whole)
    start = whole.index(b"data.pkl") + 40  # inside the pickle's bytes
    damaged[start:start + 8] = b"XXXXXXXX"
    (tmp_path / "damaged.pt").write_bytes(bytes(damaged))
    with pytest.raises(ModelError, match="corrupt|cannot be read"):
        load_checkpoint(tmp_path / "damaged.pt")
    with pytest.raises(ModelError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


class MakesAMarker:
    """A pickle payload that creates a folder when unpickled: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.makedirs, (self.marker,))


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy-format", "zip-format"])
def test_a_malicious_checkpoint_runs_nothing_in_either_format(tmp_path, legacy):
    """Legacy (pre-1.6, non-zip) files are read by torch with pickle_module.load before its
    Unpickler: that load too must be the restricted one, or a crafted file runs code before any
    error (issue 12, part 2)."""
    import pickle

    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    if legacy:
        path.write_bytes(pickle.dumps(MakesAMarker(marker), protocol=2))  # where the magic number goes
    else:
        torch.save({"model": MakesAMarker(marker)}, path)
    with pytest.raises(ModelError, match=r"refusing to load (posix|os)\.makedirs") as caught:
        load_checkpoint(path)
    assert "\n" not in str(caught.value)
    assert not marker.exists()


def test_a_plain_legacy_format_checkpoint_still_loads(tmp_path):
    state = {"conv.weight": torch.arange(6.0).reshape(2, 3), "meta": {"epoch": 3}}
    torch.save(state, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert (tmp_path / "old.pt").read_bytes()[:2] != b"PK"  # really the old format
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert torch.equal(loaded["conv.weight"], state["conv.weight"]) and loaded["meta"] == {"epoch": 3}


# -- ONNX export and parity -------------------------------------------------------------------------

@needs_vtest
def test_yolov5_onnx_matches_pytorch_and_decodes(tmp_path):
    model = randomise_batchnorm(YoloV5(YOLOV5N).eval())
    onnx_path = export_onnx(model, (1, 3, 320, 320), tmp_path / "y.onnx", "images", ["output0"])
    real = [model_input("yolo", frame, 320) for frame in vtest_frames(3)]
    report = check_parity(model, onnx_path, random_inputs=2, real_inputs=real)
    assert report.real_inputs == 3
    assert report.worst() < 1e-3 * report.output_ranges[0]  # boxes are in pixels (up to ~600)
    import onnxruntime

    output = onnxruntime.InferenceSession(str(onnx_path)).run(None, {"images": real[0]})[0]
    transform = letterbox(vtest_frames(1)[0], 320)[1]
    detections = decode_yolo(output, ["Normal", "Fall"], transform, "yolov5", 0.0, 0.45, 768, 576)
    assert detections and all(0 <= d.box.x1 <= d.box.x2 <= 768 for d in detections)


@needs_vtest
def test_trt_pose_onnx_matches_pytorch_and_runs_as_the_pose_model(tmp_path):
    from edge.perception import PoseEstimator

    model = randomise_batchnorm(build_trt_pose("resnet18_baseline_att"))
    onnx_path = export_onnx(model, (1, 3, 224, 224), tmp_path / "pose.onnx", "input", ["cmap", "paf"])
    report = check_parity(model, onnx_path, 1, [model_input("trt_pose", f, 224) for f in vtest_frames(2)])
    assert report.worst() < 1e-4 and len(report.output_ranges) == 2
    config = replace(Config().pose, type="onnxruntime", model=str(onnx_path), input_size=224)
    pose = PoseEstimator.from_config(config, onnx_path)
    assert pose.format == "trt_pose" and pose.input_size == 224
    people = pose.estimate(vtest_frames(1)[0])  # random weights: any number of people, all well formed
    assert all(p.keypoints.shape == (18, 3) for p in people)


def test_build_script_without_tensorrt_stops_after_the_onnx(tmp_path):
    source = build_trt_pose("resnet18_baseline_att")
    torch.save(source.state_dict(), tmp_path / "resnet18_baseline_att.pth")
    result = build(BuildRequest(source=tmp_path / "resnet18_baseline_att.pth", out=tmp_path / "pose_fp16.engine",
                                onnx_only=True, parity_images=1))
    assert result.kind == "trt_pose" and result.onnx == tmp_path / "pose_fp16.onnx" and result.onnx.is_file()
    assert result.parity is not None and result.parity.worst() < 1e-4
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="The ONNX is ready at .*pose_fp16.onnx"):
            build(BuildRequest(source=result.onnx, out=tmp_path / "pose_fp16.engine"))
    with pytest.raises(FallEdgeError, match="cannot tell the trt_pose architecture"):
        torch.save(source.state_dict(), tmp_path / "pose.pth")
        build(BuildRequest(source=tmp_path / "pose.pth", onnx_only=True))


def test_a_pth_build_without_onnxruntime_skips_parity_and_says_so(tmp_path):
    """Issue 39, defect 3: JetPack 4.6 could never build trt_pose by the documented path: the .pth
    build always imported ONNX Runtime for its parity check, and the only cp36 aarch64 wheel needs a
    newer numpy than the release's. Without ONNX Runtime the export goes on, the parity step says
    it was skipped and why (the export itself is checked against PyTorch here, above)."""
    source = build_trt_pose("resnet18_baseline_att")
    pth = tmp_path / "resnet18_baseline_att.pth"
    torch.save(source.state_dict(), pth)
    script = ("import logging, sys; sys.modules['onnxruntime'] = None\n"
              "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
              "from pathlib import Path\nfrom edge.export.build_engines import BuildRequest, build\n"
              f"result = build(BuildRequest(source=Path({str(pth)!r}), out=Path({str(tmp_path / 'pose.engine')!r}), "
              "onnx_only=True, parity_images=1))\n"
              "print('onnx', result.onnx.is_file(), 'parity', result.parity)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "onnx True parity None" in result.stdout
    assert "parity: skipped (ONNX Runtime is not installed here" in result.stderr


# -- calibration ----------------------------------------------------------------------------------

@needs_vtest
def test_calibration_batches_use_the_inference_preprocessing(tmp_path):
    assert extract_frames([VTEST], tmp_path / "calib", every_s=2.0, limit=10) == 10
    names = sorted(path.name for path in (tmp_path / "calib").iterdir())
    assert names[:2] == ["vtest_000000.jpg", "vtest_000020.jpg"]  # one frame every 2 s of a 10 fps clip
    # Frames of people: owner-only, whatever the umask.
    assert (tmp_path / "calib").stat().st_mode & 0o777 == 0o700
    assert {(tmp_path / "calib" / name).stat().st_mode & 0o777 for name in names} == {0o600}
    batches = CalibrationBatches(tmp_path / "calib", "yolo", (4, 3, 320, 320))
    assert len(batches) == 2 and batches.nbytes == 4 * 3 * 320 * 320 * 4  # 10 images: 2 full batches of 4
    first = batches.next_batch()
    assert first.shape == (4, 3, 320, 320) and first.dtype == np.float32 and first.flags["C_CONTIGUOUS"]
    image = cv2.imread(str(sorted((tmp_path / "calib").iterdir())[1]))
    assert np.array_equal(first[1:2], model_input("yolo", image, 320))
    assert batches.next_batch() is not None and batches.next_batch() is None
    assert batches.images_given == 8  # what the calibrator was actually fed (the sidecar's count)
    assert len(list(batches)) == 2  # iterating starts over
    pose_batches = CalibrationBatches(tmp_path / "calib", "trt_pose", (1, 3, 224, 224), limit=3)
    assert len(pose_batches) == 3 and abs(float(pose_batches.next_batch().mean())) < 2.0  # ImageNet-normalised
    with pytest.raises(FallEdgeError, match="has 10 images; at least 16 needed"):
        CalibrationBatches(tmp_path / "calib", "yolo", (16, 3, 320, 320))
    with pytest.raises(FallEdgeError, match="not found: make one with `fall-edge calib-frames"):
        CalibrationBatches(tmp_path / "none", "yolo", (1, 3, 320, 320))


def test_calibration_cache_round_trip(tmp_path):
    cache = CalibrationCache(tmp_path / "engines" / "y.calib")
    assert cache.read() is None and not cache.exists()
    cache.write(b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n")
    assert cache.exists() and cache.read() == b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n"
    assert not list((tmp_path / "engines").glob("*.tmp"))


def test_a_calibration_cache_is_used_only_for_what_it_was_computed_from(tmp_path, caplog):
    """The key: the ONNX's sha256, the preprocessing (as what it does), the input shape and the
    calibrator. Another of any, or no record of them, and the table is not used; calibration
    images given explicitly always recalibrate."""
    from edge.export.calibration import calibration_key

    key = calibration_key("ab" * 32, "yolo", (1, 3, 320, 320), "minmax")
    table = b"TRT-8601-MinMaxCalibration\nimages: 3c010a14\n"
    CalibrationCache(tmp_path / "y.calib", key=key).write(table, images=16)
    same = CalibrationCache(tmp_path / "y.calib", key=dict(key))
    assert same.usable() and same.read() == table and same.used and same.meta()["images"] == 16
    for changed in (calibration_key("cd" * 32, "yolo", (1, 3, 320, 320), "minmax"),
                    calibration_key("ab" * 32, "yolo", (1, 3, 320, 320), "entropy"),
                    calibration_key("ab" * 32, "yolo", (1, 3, 640, 640), "minmax")):
        other = CalibrationCache(tmp_path / "y.calib", key=changed)
        with caplog.at_level("WARNING", logger="edge.export.calibration"):
            assert not other.usable() and other.read() is None and not other.used
        assert "not using the calibration cache" in caplog.text and "calibrating again" in caplog.text
    assert "computed for another calibrator" in CalibrationCache(
        tmp_path / "y.calib", key=calibration_key("ab" * 32, "yolo", (1, 3, 320, 320), "entropy")).mismatch()
    assert CalibrationCache(tmp_path / "y.calib", key=key, recalibrate=True).read() is None
    (tmp_path / "y.calib.json").unlink()
    assert "has no y.calib.json" in CalibrationCache(tmp_path / "y.calib", key=key).mismatch()


def test_the_preprocessing_digest_follows_what_the_preprocessing_does(monkeypatch):
    import edge.export.calibration as calibration

    yolo = calibration.preprocessing_digest("yolo", 320)
    assert yolo == calibration.preprocessing_digest("yolo", 320)
    assert yolo != calibration.preprocessing_digest("yolo", 640)
    assert yolo != calibration.preprocessing_digest("trt_pose", 320)
    original = calibration.model_input
    monkeypatch.setattr(calibration, "model_input", lambda kind, frame, size: original(kind, frame[..., ::-1], size))
    assert calibration.preprocessing_digest("yolo", 320) != yolo  # channels swapped: another table


def test_calibrator_defaults_and_names():
    from edge.export.calibration import default_calibrator, make_calibrator

    assert default_calibrator("yolo") == "minmax" and default_calibrator("trt_pose") == "entropy"
    with pytest.raises(FallEdgeError, match="calibrator 'percentile' is not one of minmax, entropy"):
        make_calibrator(None, None, None, CalibrationCache(Path("x.calib")), 1, "percentile")


@pytest.mark.skipif(not FALL_MODEL.exists(), reason="models/ not fetched (fall-edge fetch-models)")
def test_the_head_kept_out_of_int8_is_the_last_yolo_block(tmp_path):
    """One rule for both INT8 paths (TensorRT's per-layer FP16 and ONNX Runtime's float nodes):
    /model.22/ in the fetched YOLOv8 fall model, /model.24/ in a YOLOv5 export, nothing in trt_pose."""
    import onnx

    from edge.export.head import head_prefix
    from edge.export.quantize import float_nodes

    names = [node.name for node in onnx.load(str(FALL_MODEL)).graph.node]
    assert head_prefix(names) == "/model.22/"
    kept = float_nodes(FALL_MODEL, None, "yolo")
    assert kept == [name for name in names if name.startswith("/model.22/")] and len(kept) > 20
    assert float_nodes(FALL_MODEL, None, "trt_pose") == []
    yolov5 = export_onnx(YoloV5(YOLOV5N).eval(), (1, 3, 320, 320), tmp_path / "y5.onnx", "images", ["output0"])
    assert head_prefix(node.name for node in onnx.load(str(yolov5)).graph.node) == "/model.24/"
    pose = export_onnx(build_trt_pose("resnet18_baseline_att"), (1, 3, 224, 224), tmp_path / "pose.onnx", "input",
                       ["cmap", "paf"])
    assert head_prefix(node.name for node in onnx.load(str(pose)).graph.node) == ""


# -- sidecars and precision -------------------------------------------------------------------------

def sample_info(engine):
    return EngineInfo(engine_file=str(engine), source_file="models/fall.onnx", source_sha256="a" * 64,
                      onnx_sha256="a" * 64, kind="yolo", precision="fp16", requested_precision="int8",
                      input_name="images", input_shape=[1, 3, 640, 640], output_names=["output0"],
                      tensorrt_version="8.5.2.2", device_name="Orin", compute_capability="8.7",
                      built_at="2026-11-22T00:00:00+00:00", notes=["no fast INT8"])


def test_sidecar_round_trip_and_checks(tmp_path):
    engine = tmp_path / "fall_fp16.engine"
    write_sidecar(engine, sample_info(engine))
    info = read_sidecar(engine)
    assert info == sample_info(engine)
    check_engine_fits(info, engine, "8.5.2.2", "Orin", "8.7")  # the same device: fine
    with pytest.raises(ModelError, match="built with TensorRT 8.5.2.2, this device has 10.3.0: rebuild it on this "
                                         "device: fall-edge build-engines --source models/fall.onnx"):
        check_engine_fits(info, engine, "10.3.0", "Orin", "8.7")
    with pytest.raises(ModelError, match=r"built for Orin \(sm 8.7\), this device is NVIDIA Tegra X1 \(sm 5.3\)"):
        check_engine_fits(info, engine, "8.5.2.2", "NVIDIA Tegra X1", "5.3")
    with pytest.raises(ModelError, match="another version of its ONNX"):
        check_engine_fits(info, engine, "8.5.2.2", "Orin", "8.7", onnx_sha256="b" * 64)
    data = json.loads(sidecar_path(engine).read_text())
    del data["tensorrt_version"]
    sidecar_path(engine).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="lacks tensorrt_version"):
        read_sidecar(engine)
    with pytest.raises(ModelError, match="has no other.engine.json"):
        read_sidecar(tmp_path / "other.engine")


def test_precision_falls_back_where_the_gpu_is_slow():
    assert choose_precision("int8", fast_fp16=True, fast_int8=True) == ("int8", [])
    precision, notes = choose_precision("int8", fast_fp16=True, fast_int8=False)  # Jetson Nano
    assert precision == "fp16" and "no fast INT8" in notes[0]
    assert choose_precision("fp16", fast_fp16=False, fast_int8=False)[0] == "fp32"
    with pytest.raises(ModelError, match="not one of fp32, fp16, int8"):
        choose_precision("int4", True, True)


def test_a_missing_engine_names_the_build_command(tmp_path):
    from edge.daemon.runner import load_models

    config = Config()
    config.detector = replace(DetectorConfig(), type="tensorrt", model=str(tmp_path / "fall.engine"))
    with pytest.raises(ModelError, match="fall.engine is missing: build it on this device with `fall-edge "
                                         "build-engines`"):
        config.pose.type = "litert"
        load_models(config)


# -- the CPU's INT8 ONNX ----------------------------------------------------------------------------

@needs_vtest
@pytest.mark.skipif(not FALL_MODEL.exists(), reason="models/ not fetched (fall-edge fetch-models)")
def test_int8_onnx_keeps_the_detections_of_the_float_model(tmp_path):
    from edge.export.agreement import detector_agreement
    from edge.export.build_engines import int8_verdict
    from edge.export.quantize import quantize_onnx
    from edge.perception import Detector

    extract_frames([VTEST], tmp_path / "calib", every_s=4.0, limit=8)
    out = quantize_onnx(FALL_MODEL, tmp_path / "fall_int8.onnx", tmp_path / "calib", "yolo")  # head: the default
    import onnx

    nodes = onnx.load(str(out)).graph.node
    assert sum(n.op_type == "QuantizeLinear" for n in nodes) > 50
    head = [n for n in nodes if n.name.startswith("/model.22/") and n.op_type == "Conv"]
    assert head  # the head stays in float: its convolutions read dequantized weights
    reference = Detector.from_config(DetectorConfig(), FALL_MODEL)
    candidate = Detector.from_config(replace(DetectorConfig(), model=str(out)), out)
    # The build's INT8 agreement check, on the ONNX Runtime pair: frames the calibration did not see.
    agreement = detector_agreement(vtest_frames(4, step=150), reference, candidate)
    assert agreement.frames == 4 and agreement.reference_found >= 4
    assert agreement.score >= 0.7 and agreement.iou_median > 0.8
    assert int8_verdict(agreement, 0.7)[0] and not int8_verdict(agreement, 1.01)[0]
    with pytest.raises(FallEdgeError, match="no node of .* starts with /nothing/"):
        quantize_onnx(FALL_MODEL, tmp_path / "x.onnx", tmp_path / "calib", "yolo", ["/nothing/"])


def test_exports_still_work_once_gstreamer_is_loaded(tmp_path):
    """libgstreamer brings libunwind, which broke PyTorch's C++ exceptions (the process
    aborted in torch.onnx.export); the appsink reader's start-up keeps GCC's unwinder first."""
    import subprocess

    pytest.importorskip("gi", reason="PyGObject missing (the gst extra)")
    script = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "import torch, cv2\n"
        "from edge.capture.gst_readers import reader_available\n"
        "assert reader_available('appsink') == ''\n"
        "from pathlib import Path\n"
        "from test_build import YOLOV5N\n"
        "from edge.export.yolov5_net import YoloV5\n"
        "from edge.export.trt_pose_net import build_trt_pose\n"
        "from edge.export.onnx_export import export_onnx, check_parity\n"
        f"out = Path({str(tmp_path)!r})\n"
        "model = YoloV5(YOLOV5N).eval()\n"
        "check_parity(model, export_onnx(model, (1, 3, 320, 320), out / 'y.onnx', 'i', ['o']), 1, [])\n"
        "export_onnx(build_trt_pose('resnet18_baseline_att'), (1, 3, 224, 224), out / 'p.onnx', 'i', ['c', 'p'])\n"
        "print('exported')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "exported" in result.stdout, result.stderr[-500:]


def test_the_daemon_builds_a_missing_engine_from_build_source(tmp_path):
    """With build.source set, a missing engine is built at start; without TensorRT (here) the
    build gets as far as the ONNX and stops with one clear error."""
    from edge.daemon.runner import engine_path

    torch.save(build_trt_pose("resnet18_baseline_att").state_dict(), tmp_path / "resnet18_baseline_att.pth")
    pose = replace(Config().pose, type="tensorrt", model=str(tmp_path / "engines" / "pose_fp16.engine"),
                   build=BuildConfig(source=str(tmp_path / "resnet18_baseline_att.pth")))
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="TensorRT is not installed here.*The ONNX is ready at"):
            engine_path(pose, "pose")
        assert (tmp_path / "engines" / "pose_fp16.onnx").is_file()
    litert = replace(Config().pose, build=BuildConfig(source="anything.pth"))  # not tensorrt: never built
    assert engine_path(litert, "pose").name == "movenet_multipose_lightning.tflite"


def test_build_engines_cli_errors_are_one_line(tmp_path):
    import subprocess

    result = subprocess.run([sys.executable, "-m", "edge", "build-engines", "--source", str(tmp_path / "x.pt")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"fall-edge: error: {tmp_path / 'x.pt'} not found: pass the .pt, "
                                                  f".pth or .onnx to build from"]


# -- what the device needs to build ---------------------------------------------------------------

def test_kind_from_outputs_tells_trt_pose_from_yolo():
    from edge.export.engine import kind_from_outputs

    assert kind_from_outputs([[1, 18, 56, 56], [1, 42, 56, 56]]) == "trt_pose"
    assert kind_from_outputs([[1, 6, 8400]]) == "yolo"
    assert kind_from_outputs([[1, 6300, 7]]) == "yolo"


def test_an_onnx_source_needs_no_onnxruntime_on_the_device(tmp_path):
    """The jetson extra installs neither onnxruntime nor onnx: building from a .onnx must get as
    far as TensorRT (here: the one-line 'no TensorRT' error) with onnxruntime and onnx absent."""
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed: the build would run")
    except ImportError:
        pass
    script = (
        "import sys; sys.modules['onnxruntime'] = None; sys.modules['onnx'] = None\n"
        "from pathlib import Path\n"
        "from edge.errors import ModelError\n"
        "from edge.export.build_engines import BuildRequest, build\n"
        "try:\n"
        f"    build(BuildRequest(source=Path({str(FALL_MODEL)!r}), out=Path({str(tmp_path / 'f.engine')!r})))\n"
        "except ModelError as exc:\n"
        "    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "The ONNX is ready at" in result.stdout and "onnxruntime" not in result.stderr


def test_build_source_problem_names_what_is_missing(tmp_path):
    from edge.export.sources import build_source_problem

    assert build_source_problem(FALL_MODEL) is None
    assert "not found" in build_source_problem(tmp_path / "resnet18_baseline_att_224x224_A_epoch_249.pth")
    assert "not a .onnx, .pth or .pt" in build_source_problem(tmp_path / "weights.bin")
    release = tmp_path / "resnet18_baseline_att_224x224_A_epoch_249.pth"
    release.write_bytes(b"weights")  # named for trt_pose's release, but not its bytes
    assert "is not trt_pose's resnet18_baseline_att_224x224_A" in build_source_problem(release)
    pth = tmp_path / "resnet18_baseline_att_site_finetuned.pth"  # the user's own: not checked by blob id
    pth.write_bytes(b"weights")
    assert build_source_problem(pth) is None  # torch is installed here
    script = ("import sys; sys.modules['torch'] = None\n"
              "from pathlib import Path\n"
              "from edge.export.sources import build_source_problem\n"
              f"print(build_source_problem(Path({str(pth)!r})))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.stdout.startswith(f"building from {pth.name} needs torch, which is not installed"), result.stderr
    # Issue 39, defect 2: NVIDIA's torch wheel is found but does not import without its system
    # libraries; the doctor showed green and the service crash-looped. A torch that raises as that
    # one does, first on the path: the import is tried in a fresh interpreter, and the reason named.
    broken = tmp_path / "site" / "torch"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('libopenblas.so.0: cannot open shared object file: "
                                        "No such file or directory')\n")
    script = ("from pathlib import Path\nfrom edge.export.sources import build_source_problem\n"
              f"print(build_source_problem(Path({str(pth)!r})))\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{ROOT}")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT,
                            env=env)
    assert result.stdout.startswith(f"building from {pth.name} needs torch, which is installed but does not import "
                                    "(ImportError: libopenblas.so.0: cannot open shared object file"), result.stdout


def test_first_start_without_calibration_images_builds_fp16_and_says_how_to_calibrate(tmp_path):
    """A new install has no site frames yet: an INT8 build at the first start would fail the
    service into its start limit; it builds FP16 instead, and the note (log, sidecar, health)
    says how to calibrate later."""
    from edge.config import PoseConfig
    from edge.daemon.runner import first_start_build_plan

    engine = tmp_path / "pose_int8.engine"
    calib = tmp_path / "calib"
    section = PoseConfig(type="tensorrt", model=str(engine),
                         build=BuildConfig(source="w.pth", precision="int8", calibration_dir=str(calib)))
    precision, folder, note = first_start_build_plan(section, engine)
    assert (precision, folder) == ("fp16", None)
    assert note == (f"INT8 asked, but {calib} has no calibration images yet: built FP16. To calibrate: "
                    f"fall-edge calib-frames VIDEO... --out {calib}, then delete {engine} and restart the service")
    calib.mkdir()
    assert first_start_build_plan(section, engine)[0] == "fp16"  # an empty folder is no better
    cv2.imwrite(str(calib / "frame_0001.jpg"), np.zeros((8, 8, 3), np.uint8))
    assert first_start_build_plan(section, engine) == ("int8", calib, None)
    fp16 = replace(section, build=replace(section.build, precision="fp16"))
    assert first_start_build_plan(fp16, engine) == ("fp16", calib, None)


def test_health_reports_each_engines_precision_and_notes(tmp_path):
    from edge.daemon.runner import engine_notes

    engine = tmp_path / "pose.engine"
    engine.write_bytes(b"engine")
    note = "INT8 asked, but calib has no calibration images yet: built FP16. To calibrate: ..."
    write_sidecar(engine, EngineInfo(
        engine_file=str(engine), source_file="w.pth", source_sha256="a" * 64, onnx_sha256="b" * 64, kind="trt_pose",
        precision="fp16", requested_precision="int8", input_name="input", input_shape=[1, 3, 224, 224],
        output_names=["cmap", "paf"], tensorrt_version="10.3.0", device_name="Orin", compute_capability="8.7",
        built_at="2026-12-06T00:00:00Z", notes=[note]))
    config = Config()
    config.pose = replace(config.pose, type="tensorrt", model=str(engine))
    assert engine_notes(config) == {"pose": {"precision": "fp16", "requested_precision": "int8", "notes": [note]}}
    assert engine_notes(Config()) == {}  # the CPU backends have no engines


def test_a_damaged_catalogued_onnx_is_refused_before_an_engine_or_int8_copy_is_made(tmp_path):
    """Issue 30, defect 11: one flipped bit in the catalogued detector went into build-engines
    and quantize-onnx unchecked; the daemon checks it, so must the tools that build from it."""
    import subprocess

    damaged = tmp_path / "fall_yolov8s.onnx"
    data = bytearray((ROOT / "models" / "fall_yolov8s.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    for command in (["build-engines", "--source", str(damaged), "--out", str(tmp_path / "d.engine")],
                    ["quantize-onnx", "--source", str(damaged), "--out", str(tmp_path / "d_int8.onnx"),
                     "--calib-dir", str(tmp_path)]):
        result = subprocess.run([sys.executable, "-m", "edge", *command], cwd=ROOT, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1] == (f"fall-edge: error: model file {damaged} does not match "
                                                          f"its sha256: delete it and run `fall-edge fetch-models` "
                                                          f"(or `python scripts/fetch_models.py`)")
        assert not list(tmp_path.glob("d*"))
