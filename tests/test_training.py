"""The training loop end to end on a tiny synthetic set: checkpoints, metrics, loss, resume, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT

from common.configuring import ConfigError, load_config
from trainer.config import TrainConfig
from trainer.training.distributed import ProcessContext
from trainer.training.loop import Trainer, TrainingSetupError

TINY = [
    "model.arch=resnet18",
    "model.height=64",
    "model.width=32",
    "model.pretrained=null",
    "data.num_ids_per_batch=4",
    "data.images_per_id=4",
    "data.batch_size=16",
    "data.workers=0",
    "data.test_batch_size=64",
    "optim.lr=1e-3",
    "optim.epochs=2",
    "optim.milestones=[2]",
    "eval.start_epoch=2",
    "eval.trials=2",
    "run.amp=false",
    "run.deterministic=true",
    "run.threads=1",
    "run.log_every_iters=1",
    "run.device=cpu",
]
CPU = ProcessContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def tiny_sysu(tmp_path_factory) -> Path:
    from trainer.synthetic.datasets import write_sysu

    root = tmp_path_factory.mktemp("tiny-sysu")
    write_sysu(
        root,
        num_ids=14,
        images_per_camera=4,
        height=64,
        width=32,
        seed=3,
        num_test_ids=4,
        num_val_ids=1,
        progress=False,
    )
    return root


def _num_train_ids(root: Path) -> int:
    from trainer.data import load_train_samples

    return len({s.label for s in load_train_samples(root, "sysu")})


def _config(root: Path, out: Path, *extra: str) -> TrainConfig:
    return load_config(
        TrainConfig,
        overrides=[
            *TINY,
            f"data.root={root}",
            f"run.output_dir={out}",
            f"model.num_classes={_num_train_ids(root)}",
            *extra,
        ],
    )


def test_tiny_run_end_to_end(tiny_sysu, tmp_path):
    out = tmp_path / "run"
    result = Trainer(
        _config(tiny_sysu, out, "optim.epochs=3", "optim.milestones=[3]", "eval.start_epoch=3"),
        CPU,
        progress_bar=False,
    ).fit()
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "checkpoints/final.pt",
    ):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) >= 6 and all(r["step"] == i + 1 for i, r in enumerate(train))
    assert {"loss", "id", "cc", "sep", "id_visible", "id_infrared", "kl", "lr", "images_per_s"} <= set(
        train[0]
    )
    first = sum(r["loss"] for r in train[:2]) / 2
    last = sum(r["loss"] for r in train[-2:]) / 2
    assert last < first, f"loss did not go down: {first:.3f} -> {last:.3f}"
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals and 0.0 <= evals[-1]["rank1"] <= 1.0
    for protocol in ("all_1shot", "all_10shot", "indoor_1shot", "indoor_10shot"):
        assert f"{protocol}/mAP" in evals[-1]
    assert (out / "eval" / "final").is_dir() and any((out / "eval" / "final").glob("*.md"))
    assert (out / "pictures" / "loss_curves.png").is_file()
    assert (out / "pictures" / "pattern_maps.png").is_file()
    assert any((out / "tensorboard").iterdir())
    assert result.images_per_second > 0 and result.peak_memory_mb > 0
    from trainer.checkpoint import load_model

    model, payload = load_model(out / "checkpoints" / "final.pt")  # export path: weights_only load
    assert model.config.arch == "resnet18" and "config_yaml" in payload


def _train_process(root: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "trainer.cli.train", "--no-progress"]
    overrides = [
        *TINY,
        f"data.root={root}",
        f"run.output_dir={out}",
        f"model.num_classes={_num_train_ids(root)}",
    ]
    overrides += [
        "optim.epochs=3",
        "optim.milestones=[2]",
        "eval.start_epoch=3",
        "eval.trials=1",
        "run.checkpoint_every_iters=1",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [*args, *extra, *overrides],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _steps_logged(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"kind": "train"' in line)


def test_kill_minus_9_and_resume_ends_with_the_same_weights(tiny_sysu, tmp_path):
    reference = _train_process(tiny_sysu, tmp_path / "uninterrupted")
    killed = _train_process(tiny_sysu, tmp_path / "killed")
    deadline = time.monotonic() + 240
    while (
        _steps_logged(tmp_path / "killed") < 5
    ):  # mid-epoch 2: optimizer, scheduler, EMA, sampler state all live
        assert killed.poll() is None, killed.stdout.read()
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert reference.wait(timeout=300) == 0, reference.stdout.read()
    resumed = _train_process(tiny_sysu, tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    a = torch.load(tmp_path / "uninterrupted" / "checkpoints" / "final.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "killed" / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=f"{key} differs after resume")
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
        if '"train"' in x
    ]
    assert steps == sorted(set(steps)), "resumed run left duplicate metrics lines"


def test_config_errors_are_clear(tiny_sysu, tmp_path):
    with pytest.raises(ConfigError, match=r"batch_size=32 does not match P x K = 4 x 4"):
        load_config(TrainConfig, overrides=[*TINY, "data.batch_size=32"])
    with pytest.raises(ConfigError, match=r"model.height=70 cannot be taken by resnet18"):
        load_config(TrainConfig, overrides=[*TINY, "model.height=70"])
    with pytest.raises(TrainingSetupError, match="data.root is not set"):
        Trainer(load_config(TrainConfig, overrides=TINY), CPU)
    with pytest.raises(TrainingSetupError, match=r"data.root=.*nowhere is not a folder"):
        Trainer(load_config(TrainConfig, overrides=[*TINY, f"data.root={tmp_path / 'nowhere'}"]), CPU)
    with pytest.raises(
        TrainingSetupError, match=r"model.num_classes=395 but the training set .* has \d+ identities"
    ):
        Trainer(
            load_config(TrainConfig, overrides=[*TINY, f"data.root={tiny_sysu}", "model.num_classes=395"]),
            CPU,
        )
    with pytest.raises(TrainingSetupError, match="no checkpoint"):
        Trainer(_config(tiny_sysu, tmp_path / "fresh"), CPU, resume=True)
    existing = tmp_path / "existing"
    (existing / "checkpoints").mkdir(parents=True)
    (existing / "checkpoints" / "last.pt").write_bytes(b"x")
    with pytest.raises(TrainingSetupError, match="pass --resume"):
        Trainer(_config(tiny_sysu, existing), CPU)


def test_cli_reports_errors_without_a_traceback(tmp_path):
    from trainer.cli.train import main

    assert main([*TINY, "loss.mml=maybe"]) == 2
    assert main([*TINY, f"data.root={tmp_path / 'missing'}"]) == 2
    # Options and overrides may be mixed in any order (argparse's intermixed parsing).
    assert main(["--no-progress", *TINY[:3], "--resume", *TINY[3:], f"data.root={tmp_path / 'missing'}"]) == 2


def test_ddp_under_torchrun_on_cpu(tiny_sysu, tmp_path):
    """Two gloo processes share each batch's identities; rank 0 writes the run folder."""
    out = tmp_path / "ddp"
    overrides = [
        *TINY,
        f"data.root={tiny_sysu}",
        f"run.output_dir={out}",
        f"model.num_classes={_num_train_ids(tiny_sysu)}",
    ]
    overrides += ["optim.epochs=1", "optim.milestones=[1]", "eval.start_epoch=1", "eval.trials=1"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "trainer.cli.train",
        "--no-progress",
        *overrides,
    ]
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (out / "checkpoints" / "final.pt").is_file()
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert last["world_size"] == 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if r["kind"] == "train"] and [r for r in records if r["kind"] == "eval"]
