"""The one embedder runtime: backend choice, torch vs onnxruntime agreement, batching, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from engine_artifacts import EMBEDDING_DIM, HEIGHT, WIDTH, TinyEngine, copy_artifact, images

from common.files import sha256_file
from engines.runtime import EmbedderError, backend_for, load_embedder, preprocess_crops
from engines.runtime.onnxruntime_backend import OnnxRuntimeEmbedder
from engines.sidecar import (
    BatchProfile,
    EngineSidecar,
    Preprocessing,
    SidecarError,
    load_sidecar,
    save_sidecar,
    sidecar_path,
)

REPO = Path(__file__).resolve().parents[1]
OSNET = REPO / ".." / "shared" / "data" / "real" / "models" / "osnet_x0_25_msmt17.onnx"


def test_backend_is_chosen_from_the_artifact(engine: TinyEngine) -> None:
    assert backend_for("m.onnx") == "onnxruntime"
    assert backend_for("m.plan") == backend_for("m.engine") == "tensorrt"
    assert backend_for("m.pt") == "torch"
    with pytest.raises(EmbedderError, match="unknown artifact type"):
        backend_for("m.tflite")
    with load_embedder(engine.onnx, intra_op_threads=1) as onnx_embedder:
        assert onnx_embedder.backend == "onnxruntime"
    with load_embedder(engine.checkpoint) as torch_embedder:
        assert torch_embedder.backend == "torch"
        assert torch_embedder.sidecar.format == "torch" and torch_embedder.sidecar.precision == "fp32"


@pytest.mark.parametrize("batch", [1, 9])
def test_torch_and_onnxruntime_backends_agree(engine: TinyEngine, batch: int) -> None:
    x = images(batch, seed=10 + batch)
    with load_embedder(engine.checkpoint) as torch_embedder, load_embedder(engine.onnx) as onnx_embedder:
        a, b = torch_embedder.embed(x), onnx_embedder.embed(x)
        assert torch_embedder.embedding_dim == onnx_embedder.embedding_dim == EMBEDDING_DIM
    for out in (a, b):
        assert out.shape == (batch, EMBEDDING_DIM) and out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.sum(a * b, axis=1).min() >= 0.9999


def test_empty_batch_and_empty_crop_list(engine: TinyEngine) -> None:
    with load_embedder(engine.onnx) as embedder:
        out = embedder.embed(np.zeros((0, 3, HEIGHT, WIDTH), np.float32))
        assert out.shape == (0, EMBEDDING_DIM) and out.dtype == np.float32
        assert embedder.embed_crops([]).shape == (0, EMBEDDING_DIM)


def test_batches_larger_than_the_profile_are_split(engine: TinyEngine) -> None:
    sidecar = dataclasses.replace(
        load_sidecar(engine.onnx), batch=BatchProfile(min=1, opt=2, max=3), engine_id=""
    )
    seen: list[int] = []

    class Spy(OnnxRuntimeEmbedder):
        def _run(self, batch: np.ndarray) -> np.ndarray:
            seen.append(batch.shape[0])
            return super()._run(batch)

    x = images(8, seed=3)
    with Spy(sidecar, engine.onnx) as split, load_embedder(engine.onnx) as whole:
        assert split.max_batch == 3
        np.testing.assert_allclose(split.embed(x), whole.embed(x), atol=1e-5)
    assert seen == [3, 3, 2]


def test_wrong_input_is_a_clear_error(engine: TinyEngine) -> None:
    with load_embedder(engine.onnx) as embedder:
        with pytest.raises(EmbedderError, match=rf"\(N, 3, {HEIGHT}, {WIDTH}\)"):
            embedder.embed(np.zeros((2, 3, HEIGHT + 16, WIDTH), np.float32))
        with pytest.raises(EmbedderError, match="float32"):
            embedder.embed(np.zeros((2, 3, HEIGHT, WIDTH), np.float64))
        with pytest.raises(EmbedderError):
            embedder.embed(np.zeros((3, HEIGHT, WIDTH), np.float32))


def test_sidecar_that_does_not_match_the_artifact_is_refused(engine: TinyEngine, tmp_path: Path) -> None:
    copy = copy_artifact(engine.onnx, tmp_path / "a")
    # 1. The file changed after export: sha256 mismatch.
    with open(copy, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(SidecarError, match="does not match"):
        load_embedder(copy)
    # 2. A consistent sidecar (right sha, valid engine_id) that describes another input size.
    other = copy_artifact(engine.onnx, tmp_path / "b")
    sidecar = load_sidecar(other)
    wrong = dataclasses.replace(sidecar, preprocessing=Preprocessing(height=256, width=128), engine_id="")
    save_sidecar(wrong, other)
    with pytest.raises(SidecarError, match="graph input shape"):
        load_embedder(other)
    # 3. Wrong output name / format.
    save_sidecar(dataclasses.replace(sidecar, output_name="features", engine_id=""), other)
    with pytest.raises(SidecarError, match="output_name"):
        load_embedder(other)
    save_sidecar(dataclasses.replace(sidecar, format="tensorrt", engine_id=""), other)
    with pytest.raises(SidecarError, match="describes a 'tensorrt' artifact"):
        load_embedder(other)
    # 4. No sidecar at all.
    sidecar_path(other).unlink()
    with pytest.raises(SidecarError, match="no sidecar"):
        load_embedder(other)
    with pytest.raises(FileNotFoundError):
        load_embedder(tmp_path / "missing.onnx")


def test_embed_crops_preprocesses_bgr_and_grey_as_the_sidecar_says(engine: TinyEngine) -> None:
    rng = np.random.default_rng(5)
    colour = rng.integers(0, 256, (190, 70, 3), dtype=np.uint8)  # BGR, OpenCV order
    grey = rng.integers(0, 256, (150, 60), dtype=np.uint8)  # single-channel infrared
    with load_embedder(engine.onnx) as embedder:
        out = embedder.embed_crops([colour, grey])
        spec = embedder.sidecar.preprocessing
        expected = embedder.embed(preprocess_crops([colour, grey], spec, input_order="BGR"))
        np.testing.assert_allclose(out, expected, atol=1e-6)
        # Grey replicated to 3 channels == the same crop given as a 3-channel grey image.
        grey3 = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
        np.testing.assert_allclose(embedder.embed_crops([grey3]), out[1:], atol=1e-5)
        # Channel order matters: RGB input declared as RGB equals BGR input declared as BGR.
        rgb = np.ascontiguousarray(colour[:, :, ::-1])
        np.testing.assert_allclose(embedder.embed_crops([rgb], input_order="RGB"), out[:1], atol=1e-6)


def test_pca_projection_file_is_verified(engine: TinyEngine, tmp_path: Path) -> None:
    from engines.compression import compress_artifact

    copy = copy_artifact(engine.onnx, tmp_path)
    with load_embedder(copy) as embedder:
        features = embedder.embed(images(24, seed=7))
    variant = compress_artifact(copy, "pca", dim=8, features=features)
    pca_file = tmp_path / str(variant.compression.pca_file)
    with load_embedder(tmp_path / variant.artifact) as compressed:
        assert compressed.embed(images(2)).shape == (2, 8)
    with np.load(pca_file) as data:
        arrays = dict(data)
    arrays["components"] = arrays["components"][::-1].copy()
    np.savez(pca_file, **arrays)
    with pytest.raises(EmbedderError, match="sha256"):
        load_embedder(tmp_path / variant.artifact)


def test_onnxruntime_path_needs_no_torch(engine: TinyEngine) -> None:
    code = (
        "import sys, numpy as np\n"
        "from engines.runtime import load_embedder\n"
        f"e = load_embedder({str(engine.onnx)!r})\n"
        f"out = e.embed_crops([np.zeros((100, 40, 3), np.uint8), np.zeros((90, 30), np.uint8)])\n"
        "assert out.shape == (2, e.embedding_dim), out.shape\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.') or m.startswith('trainer.model')]\n"
        "assert not bad, bad[:5]\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_torch_backend_refuses_cpu_fp16_and_unknown_devices(engine: TinyEngine) -> None:
    with pytest.raises(EmbedderError, match="CUDA"):
        load_embedder(engine.checkpoint, half=True)
    with pytest.raises(EmbedderError, match="device"):
        load_embedder(engine.onnx, device="tpu")


def test_torch_backend_keeps_instance_norm_fp32_in_half_models(engine: TinyEngine) -> None:
    import torch

    from engines.runtime.torch_backend import _keep_instance_norm_fp32
    from trainer.checkpoint import load_model

    model, _ = load_model(engine.checkpoint)
    model = model.half()
    assert _keep_instance_norm_fp32(model) == 2
    norm = model.backbone.mam3.norm
    seen: list[torch.dtype] = []
    norm.norm.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    out = norm(torch.randn(2, 256, 8, 4).half())
    assert out.dtype == torch.float16  # FP16 in, FP16 out ...
    assert seen == [torch.float32]  # ... normalised in FP32


def test_foreign_onnx_with_a_hand_written_sidecar(tmp_path: Path) -> None:
    """A real learned ReID model (OSNet, visible only) runs through load_embedder with its sidecar."""
    if not OSNET.is_file():
        pytest.skip(f"real OSNet model not found at {OSNET}")
    model = tmp_path / "osnet.onnx"
    shutil.copyfile(OSNET, model)
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    sidecar = EngineSidecar(
        format="onnx",
        artifact=model.name,
        artifact_sha256=sha256_file(model),
        preprocessing=Preprocessing(height=256, width=128),
        output_dim=512,
        precision="fp32",
        input_name=input_name,
        output_name=output_name,
        source={"created_by": "hand-written for a foreign model", "model": "osnet_x0_25_msmt17"},
    )
    save_sidecar(sidecar, model)
    assert json.loads(sidecar_path(model).read_text())["engine_id"] == sidecar.engine_id
    rng = np.random.default_rng(0)
    person = rng.integers(0, 256, (240, 100, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (260, 110, 3), dtype=np.uint8)
    fixed_batch = session.get_inputs()[0].shape[0]
    with load_embedder(model) as embedder:
        if isinstance(fixed_batch, int):
            pytest.skip(f"this OSNet export has a fixed batch of {fixed_batch}")
        out = embedder.embed_crops([person, cv2.flip(person, 1), other])
    assert out.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # The same crop mirrored stays closer to itself than an unrelated crop does.
    assert out[0] @ out[1] > out[0] @ out[2]
