"""trt_pose's weights: fetched over HTTP (here from a server on the loopback, serving files made
here: the real links are not reachable from this machine), verified by git blob id as `git
hash-object` computes it, refused with the reason otherwise."""

import subprocess
import sys
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edge.errors import ModelError
from edge.export.sources import build_source_problem
from edge.modelstore.trt_pose_weights import (
    TRT_POSE_WEIGHTS,
    fetch_trt_pose_weights,
    git_blob_id,
    verify_trt_pose_weights,
)

ROOT = Path(__file__).resolve().parents[1]
RESNET = TRT_POSE_WEIGHTS[0]


def hash_object(path: Path) -> str:
    return subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def server():
    """Serves whatever bytes the test puts in `server.body` at any path."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Length", str(len(httpd.body)))
            self.end_headers()
            self.wfile.write(httpd.body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.body = b""
    worker = threading.Thread(target=httpd.serve_forever, daemon=True)
    worker.start()
    yield httpd
    httpd.shutdown()
    worker.join()


def test_git_blob_id_is_what_git_hash_object_says(tmp_path):
    for size in (0, 5, 3 << 20):
        made = tmp_path / f"weights{size}.pth"
        made.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
        assert git_blob_id(made) == hash_object(made)


def test_the_catalog_names_the_ids_from_the_issue():
    assert {w.name: w.git_blob_id for w in TRT_POSE_WEIGHTS} == {
        "resnet18_baseline_att_224x224_A": "35707fafe92b22d8c3d84b34676d095bba4080c0",
        "densenet121_baseline_att_256x256_B": "cfe81a7a4bdd77591b1eb8e78096c2b6bfe99c7c"}


def test_fetched_weights_are_verified_before_they_get_their_name(tmp_path, server):
    made = tmp_path / "made.pth"
    made.write_bytes(b"trt_pose weights made for this test" * 1000)
    server.body = made.read_bytes()
    weights = replace(RESNET, url=f"http://127.0.0.1:{server.server_port}/w", git_blob_id=hash_object(made))
    models = tmp_path / "models"
    path = fetch_trt_pose_weights(weights, models)
    assert path == models / RESNET.file and path.read_bytes() == made.read_bytes()
    server.body = b"changed upstream"
    assert fetch_trt_pose_weights(weights, models).read_bytes() == made.read_bytes()  # kept: already verified


def test_a_web_page_instead_of_the_weights_is_refused_and_nothing_is_kept(tmp_path, server):
    server.body = b"<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title></html>"
    weights = replace(RESNET, url=f"http://127.0.0.1:{server.server_port}/w")
    models = tmp_path / "models"
    with pytest.raises(ModelError, match="is a web page, not the weights") as caught:
        fetch_trt_pose_weights(weights, models)
    assert RESNET.git_blob_id in str(caught.value) and "fetch-models --trt-pose" in str(caught.value)
    assert list(models.iterdir()) == []


def test_weights_named_for_trt_pose_but_different_are_refused_before_a_build(tmp_path):
    impostor = tmp_path / RESNET.file
    impostor.write_bytes(b"not the release")
    with pytest.raises(ModelError, match="the file differs from trt_pose's release"):
        verify_trt_pose_weights(impostor)
    assert "is not trt_pose's resnet18_baseline_att_224x224_A" in build_source_problem(impostor)
    other = tmp_path / "my_finetuned_pose.pth"  # a name of the user's own: not checked against the release
    other.write_bytes(b"own weights")
    verify_trt_pose_weights(other)


def test_fetch_models_refuses_an_unknown_trt_pose_name_in_one_line():
    result = subprocess.run([sys.executable, "-m", "edge", "fetch-models", "--trt-pose", "resnet50"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        "--trt-pose resnet50: not a trt_pose model fall-edge knows; name one of resnet18_baseline_att_224x224_A, "
        "densenet121_baseline_att_256x256_B")
