"""End to end over loopback TCP: two edge nodes and the linker as separate processes, a trained
MPANet engine, a synthetic RGB + thermal scene; identities must be linked across the modalities.

The detector is the scene's ground truth (``mot``), so this measures linking, not detection. The
scene's people are identities the small test model was trained on (closed set): CI cannot afford
the ~10 CPU minutes a model needs to link unseen people (the demo measures that), so this checks
that the whole chain - crops, embeddings, aggregation, wire, gallery, rules - links the people the
model can tell apart.

Measured (2 cores, 4 people, 12 s at 10 fps, a ResNet-18 trained 6 epochs on 12 identities at
64x32): 1 of 4 people linked across modalities, cross-modality link precision 1.0 (recall 0.5),
IDF1 0.86 final / 0.78 online; about 2.5 minutes, most of it training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO_ROOT

# Floors a little below what was measured (see the module docstring).
FLOOR_PEOPLE, FLOOR_PRECISION, FLOOR_IDF1 = 1, 0.5, 0.6


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory) -> tuple[Path, int, list[int]]:
    import torch

    from common.configuring import load_config
    from engines.export import export_onnx
    from engines.linking_thresholds import calibrate_artifact
    from trainer.config import TrainConfig
    from trainer.data import load_train_samples
    from trainer.synthetic.datasets import write_sysu
    from trainer.training.distributed import ProcessContext
    from trainer.training.loop import Trainer

    work = tmp_path_factory.mktemp("e2e")
    root = work / "data"
    summary = write_sysu(
        root,
        num_ids=14,
        images_per_camera=10,
        height=96,
        width=48,
        seed=11,
        num_test_ids=2,
        num_val_ids=1,
        progress=False,
    )
    train_ids = sorted({s.pid for s in load_train_samples(root, "sysu")})
    cfg = load_config(
        TrainConfig,
        [REPO_ROOT / "configs" / "synthetic-cpu.yaml"],
        [
            f"data.root={root}",
            f"run.output_dir={work / 'run'}",
            f"model.num_classes={len(train_ids)}",
            "model.height=64",
            "model.width=32",
            "optim.epochs=6",
            "optim.milestones=[100]",
            "eval.start_epoch=100",
            "eval.trials=1",
            "data.workers=0",
            "data.num_ids_per_batch=6",
            "data.batch_size=48",
            "run.log_every_iters=50",
        ],
    )
    Trainer(cfg, ProcessContext(0, 1, 0, torch.device("cpu")), progress_bar=False).fit()
    model = work / "model.onnx"
    export_onnx(work / "run" / "checkpoints" / "final.pt", model)
    calibrate_artifact(model, root, split="train")
    assert summary.num_ids == 14
    return model, 11, train_ids


def test_nodes_and_linker_link_people_across_modalities(tiny_engine, tmp_path):
    model, dataset_seed, train_ids = tiny_engine
    from edge.demo import DemoConfig, DemoSceneConfig, run_demo

    people = 4
    demo = DemoConfig(
        output_dir=str(tmp_path / "run"),
        model=str(model),
        scene=DemoSceneConfig(seed=5, duration_s=12.0, people=people),
        progress=False,
    )
    summary = run_demo(demo, scene_identities=(dataset_seed, tuple(train_ids[:people])))
    print(json.dumps(summary["score"], indent=1))
    assert summary["exit_codes"] == {"linker": 0, "node-node-cam-rgb": 0, "node-node-cam-ir": 0}
    score = summary["score"]
    assert score["detection_recall"] > 0.9  # ground truth boxes (people cut at the border are gated)
    assert score["people_linked_across_modalities"] >= FLOOR_PEOPLE
    assert score["cross_modal_precision"] >= FLOOR_PRECISION
    assert score["idf1_final"] >= FLOOR_IDF1
    assert (tmp_path / "run" / "side_by_side.mp4").stat().st_size > 10_000


def test_scene_nodes_make_one_node_per_camera_with_its_detector_and_ground_truth(tmp_path):
    from edge.pipeline import scene_nodes

    scene = {
        "settings": {"fps": 10.0},
        "cameras": [
            {"camera_id": "rgb0", "modality": "visible", "video": "rgb0.mp4", "ground_truth": "rgb0/gt.txt"},
            {"camera_id": "ir0", "modality": "infrared", "video": "ir0.mp4", "ground_truth": "ir0/gt.txt"},
        ],
    }
    nodes, truth = scene_nodes(scene, tmp_path, "m.onnx")
    assert [n.producer_id for n in nodes] == ["node-rgb0", "node-ir0"]
    assert [n.sources[0].detector.name for n in nodes] == ["hog", "thermal"]
    assert truth == {"rgb0": str(tmp_path / "rgb0/gt.txt"), "ir0": str(tmp_path / "ir0/gt.txt")}
    assert all(n.mode == "replay" and n.transport.endpoint == "auto" for n in nodes)
    assert nodes[1].sources[0].path == str(tmp_path / "ir0.mp4") and nodes[1].sources[0].fps == 10.0
    gt_nodes, _ = scene_nodes(scene, tmp_path, "m.onnx", mode="live", detector="ground_truth")
    assert [n.sources[0].detector.settings["path"] for n in gt_nodes] == list(truth.values())
    assert {n.mode for n in gt_nodes} == {"live"}
    with pytest.raises(ValueError, match="detector must be one of"):
        scene_nodes(scene, tmp_path, "m.onnx", detector="yolo")
