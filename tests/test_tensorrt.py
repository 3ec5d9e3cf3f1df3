"""TensorRT engines built and run for real. These need TensorRT, pycuda or cuda-python, a GPU
and PyTorch; everywhere else they skip with the reason (CI here has no GPU)."""

import json
from pathlib import Path

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT does not import here (it comes with JetPack)")
torch = pytest.importorskip("torch", reason="PyTorch missing: scripts/bootstrap.sh --dev installs it")

from edge.backends import create_backend  # noqa: E402
from edge.backends.sidecar import sidecar_path  # noqa: E402
from edge.decoding.preprocess import model_input  # noqa: E402
from edge.errors import ModelError  # noqa: E402
from edge.export.calibration import extract_frames  # noqa: E402
from edge.export.engine import build_engine  # noqa: E402
from edge.export.onnx_export import export_onnx  # noqa: E402
from edge.export.trt_pose_net import build_trt_pose  # noqa: E402
from edge.export.yolov5_net import YoloV5  # noqa: E402

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


@pytest.fixture(scope="module")
def gpu():
    from edge.backends.cuda_memory import cuda_memory

    try:
        return cuda_memory()
    except ModelError as exc:
        pytest.skip(f"no usable GPU: {exc}")


@pytest.fixture(scope="module")
def frames():
    if not VTEST.exists():
        pytest.skip("opencv-doc's vtest.avi missing")
    from itertools import islice

    from edge.capture.opencv_source import iter_video_frames

    return list(islice(iter_video_frames(VTEST, 150, seek=True), 4))


@pytest.fixture(scope="module")
def yolo_onnx(tmp_path_factory):
    from test_build import YOLOV5N, randomise_batchnorm

    path = tmp_path_factory.mktemp("yolo") / "yolov5n.onnx"
    return export_onnx(randomise_batchnorm(YoloV5(YOLOV5N).eval()), (1, 3, 320, 320), path, "images", ["output0"])


def onnxruntime_outputs(onnx_path, tensor):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: tensor})


def test_fp16_yolo_engine_matches_onnxruntime(gpu, frames, yolo_onnx, tmp_path):
    engine = tmp_path / "yolov5n_fp16.engine"
    info = build_engine(yolo_onnx, engine, "fp16", "yolo", yolo_onnx)
    assert info.precision in ("fp16", "fp32") and sidecar_path(engine).is_file()
    backend = create_backend("tensorrt", engine)
    assert backend.input_shape == (1, 3, 320, 320)
    for frame in frames:
        tensor = model_input("yolo", frame, 320)
        ours, = backend.infer(tensor)
        reference, = onnxruntime_outputs(yolo_onnx, tensor)
        assert np.abs(ours[..., 4:] - reference[..., 4:]).max() < 0.02  # scores
        assert np.abs(ours[..., :4] - reference[..., :4]).max() < 2.0  # boxes, pixels


def test_int8_calibrates_once_then_reuses_the_cache(gpu, frames, yolo_onnx, tmp_path):
    extract_frames([VTEST], tmp_path / "calib", every_s=2.0, limit=16)
    engine = tmp_path / "yolov5n_int8.engine"
    info = build_engine(yolo_onnx, engine, "int8", "yolo", yolo_onnx, calibration_dir=tmp_path / "calib")
    if info.precision != "int8":  # a GPU without fast INT8 builds FP16 and says so
        assert "no fast INT8" in info.notes[0]
        return
    cache = Path(info.calibration_cache)
    assert info.calibration_images == 16 and cache.is_file() and cache.stat().st_size > 0
    assert info.calibrator == "minmax" and info.fp16_layers  # the head, pinned to FP16
    assert all(name.startswith("/model.24/") for name in info.fp16_layers)
    cache_bytes = cache.read_bytes()
    again = build_engine(yolo_onnx, tmp_path / "again.engine", "int8", "yolo", yolo_onnx, cache_path=cache)
    assert again.precision == "int8" and cache.read_bytes() == cache_bytes  # no images needed the second time
    assert again.calibration_images == 16  # the images the reused table was made from
    with pytest.raises(ModelError, match="computed for another calibrator"):
        build_engine(yolo_onnx, tmp_path / "entropy.engine", "int8", "yolo", yolo_onnx, cache_path=cache,
                     calibrator="entropy")
    backend = create_backend("tensorrt", engine)
    tensor = model_input("yolo", frames[0], 320)
    assert np.abs(backend.infer(tensor)[0][..., 4:] - onnxruntime_outputs(yolo_onnx, tensor)[0][..., 4:]).max() < 0.2


def test_trt_pose_engine_matches_onnxruntime(gpu, frames, tmp_path):
    model = build_trt_pose("resnet18_baseline_att")
    onnx_path = export_onnx(model, (1, 3, 224, 224), tmp_path / "pose.onnx", "input", ["cmap", "paf"])
    engine = tmp_path / "pose_fp16.engine"
    build_engine(onnx_path, engine, "fp16", "trt_pose", onnx_path)
    backend = create_backend("tensorrt", engine)
    tensor = model_input("trt_pose", frames[0], 224)
    for ours, reference in zip(backend.infer(tensor), onnxruntime_outputs(onnx_path, tensor)):
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() < 0.05 * max(1.0, float(np.abs(reference).max()))


def test_an_engine_from_another_tensorrt_is_refused(gpu, yolo_onnx, tmp_path):
    engine = tmp_path / "old.engine"
    build_engine(yolo_onnx, engine, "fp16", "yolo", yolo_onnx)
    data = json.loads(sidecar_path(engine).read_text())
    data["tensorrt_version"] = "8.2.1.8"
    sidecar_path(engine).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="built with TensorRT 8.2.1.8.*rebuild it on this device"):
        create_backend("tensorrt", engine)


def test_the_yolo_head_is_pinned_to_fp16_and_the_builder_told_to_obey(gpu, yolo_onnx):
    from edge.export.engine import keep_head_in_fp16

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # TensorRT 8; gone in 10
    flags = 1 << int(explicit) if explicit is not None and int(trt.__version__.split(".")[0]) < 10 else 0
    network = builder.create_network(flags)
    assert trt.OnnxParser(network, logger).parse(Path(yolo_onnx).read_bytes())
    config = builder.create_builder_config()
    kept = keep_head_in_fp16(trt, network, config)
    assert kept and all(name.startswith("/model.24/") for name in kept)
    layers = {network.get_layer(i).name: network.get_layer(i) for i in range(network.num_layers)}
    assert all(layers[name].precision == trt.float16 for name in kept)
    assert not any(layer.precision_is_set for name, layer in layers.items() if not name.startswith("/model.24/"))
    obey = getattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS", None)
    assert config.get_flag(obey if obey is not None else trt.BuilderFlag.STRICT_TYPES)
