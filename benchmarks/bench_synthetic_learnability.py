"""Is the synthetic VI-ReID data learnable, and not trivially? A small CPU experiment.

1. Writes a synthetic SYSU-MM01 set (default 120 ids, 40 held out for test, 10 images per camera,
   128 x 64) with ``trainer.synthetic``.
2. Scores two untrained baselines on the SYSU protocols (all/indoor x 1/10-shot, 10 trials,
   official-format ``rand_perm_cam.mat`` picks): raw grey pixels (16 x 8) and a randomly initialised
   ResNet-18. Cross-modality rank-1 should be near chance (1 / number of gallery ids).
3. Trains a ResNet-18 from scratch (no ImageNet weights) for a fixed CPU-time budget (default 1,200
   CPU seconds: 10 minutes of 2 cores) at 96 x 48
   with the cross-modality sampler and the MPANet train transforms: identity cross-entropy on a
   BN-neck plus a batch-hard triplet loss on the pooled feature; then scores it the same way.

Writes ``benchmarks/results/synthetic_learnability.json`` (and the report files next to it).

    python benchmarks/bench_synthetic_learnability.py [--cpu-seconds 1200] [--threads 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.files import atomic_write_text  # noqa: E402
from trainer.data import CrossModalitySampler, ReIDImageDataset, load_train_samples  # noqa: E402
from trainer.data.transforms import build_train_transform  # noqa: E402
from trainer.evaluation.features import torch_embed_fn  # noqa: E402
from trainer.evaluation.protocols import evaluate_sysu_embedder  # noqa: E402
from trainer.evaluation.reporting import to_jsonable, write_report  # noqa: E402
from trainer.synthetic.datasets import write_sysu  # noqa: E402

HEIGHT, WIDTH = 128, 64


class ReIDNet(nn.Module):
    """ResNet-18 trunk, global average pooling, BN neck, linear identity classifier."""

    def __init__(self, num_classes: int, last_stride: int = 2):
        super().__init__()
        trunk = torchvision.models.resnet18(weights=None)
        if last_stride == 1:  # as MPANet; 4x the layer4 cost, so off by default on the CPU
            trunk.layer4[0].conv1.stride = (1, 1)
            trunk.layer4[0].downsample[0].stride = (1, 1)
        self.trunk = nn.Sequential(*list(trunk.children())[:-2])
        self.neck = nn.BatchNorm1d(512)
        self.neck.bias.requires_grad_(False)
        self.classifier = nn.Linear(512, num_classes, bias=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled = self.trunk(images).mean(dim=(2, 3))
        normed = self.neck(pooled)
        return pooled, normed, self.classifier(normed)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward(images)[1]


class Embedder(nn.Module):
    def __init__(self, net: ReIDNet):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.embed(images)


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    distances = torch.cdist(features, features)
    same = labels[:, None] == labels[None, :]
    hardest_positive = (distances * same).max(dim=1).values
    hardest_negative = (distances + 1e6 * same).min(dim=1).values
    return F.relu(hardest_positive - hardest_negative + margin).mean()


def pixel_embed(images: np.ndarray) -> np.ndarray:
    """Baseline: the image itself, grey, 16 x 8."""
    grey = images.mean(axis=1, keepdims=True)
    small = F.adaptive_avg_pool2d(torch.from_numpy(grey), (16, 8)).numpy()
    return small.reshape(len(images), -1)


def summary(results: dict) -> dict:
    return {
        name: {k: round(100 * v, 2) for k, v in protocol["mean"].items()}
        for name, protocol in results["protocols"].items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu-seconds",
        type=float,
        default=1200.0,
        help="training budget in CPU seconds of this process (default 1200 = 10 minutes on 2 free cores; "
        "CPU time, so other load on the machine does not shrink the budget)",
    )
    parser.add_argument(
        "--train-height", type=int, default=96, help="network input height (images are 128 x 64)"
    )
    parser.add_argument("--train-width", type=int, default=48)
    parser.add_argument(
        "--max-steps", type=int, default=0, help="also stop after this many steps (0: no limit)"
    )
    parser.add_argument("--ids-per-batch", type=int, default=8)
    parser.add_argument("--images-per-id", type=int, default=4)
    parser.add_argument("--last-stride", type=int, default=2, choices=(1, 2))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--ids", type=int, default=120)
    parser.add_argument("--test-ids", type=int, default=40)
    parser.add_argument("--images-per-camera", type=int, default=10)
    parser.add_argument("--work", default=None, help="folder for the dataset (default: a temp dir)")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "synthetic_learnability.json")
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="synth-learn-"))
    root = work / "sysu"
    started = time.perf_counter()
    if not (root / "synthetic.json").is_file():
        write_sysu(
            root,
            num_ids=args.ids,
            images_per_camera=args.images_per_camera,
            height=HEIGHT,
            width=WIDTH,
            seed=args.seed,
            num_test_ids=args.test_ids,
            workers=args.threads,
        )
    generate_s = time.perf_counter() - started
    train = load_train_samples(root, "sysu")
    num_classes = len({s.label for s in train})
    evaluate = dict(height=args.train_height, width=args.train_width, batch_size=128, progress=False)
    report: dict = {
        "dataset": {
            "root": str(root),
            "train_images": len(train),
            "train_ids": num_classes,
            "test_ids": args.test_ids,
        },
        "generate_seconds": round(generate_s, 1),
    }
    report["chance_rank1_all_single_shot_percent"] = round(100 / args.test_ids, 2)
    report["pixels_16x8"] = summary(
        evaluate_sysu_embedder(root, pixel_embed, embedder_id="pixels", **evaluate)
    )

    net = ReIDNet(num_classes, args.last_stride)
    report["resnet18_untrained"] = summary(
        evaluate_sysu_embedder(root, torch_embed_fn(Embedder(net)), embedder_id="untrained", **evaluate)
    )

    sampler = CrossModalitySampler(
        train, num_ids_per_batch=args.ids_per_batch, images_per_id=args.images_per_id, seed=args.seed
    )
    loader = DataLoader(
        ReIDImageDataset(train, build_train_transform(args.train_height, args.train_width)),
        batch_size=sampler.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=1,
        persistent_workers=True,
    )
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=5e-4)
    train_started = time.perf_counter()
    cpu_started = time.process_time()
    steps, epoch, losses = 0, 0, []

    def done() -> bool:
        return time.process_time() - cpu_started >= args.cpu_seconds or 0 < args.max_steps <= steps

    while not done():
        sampler.set_epoch(epoch)
        net.train()
        for images, labels, _, _ in loader:
            pooled, _, logits = net(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=0.1) + batch_hard_triplet(pooled, labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            steps += 1
            if done():
                break
        elapsed = time.perf_counter() - train_started
        cpu = time.process_time() - cpu_started
        print(
            f"epoch {epoch}: {steps} steps, {elapsed:.0f} s wall, {cpu:.0f} s CPU, loss {np.mean(losses[-20:]):.3f}"
        )
        epoch += 1
    train_s = time.perf_counter() - train_started
    train_cpu_s = time.process_time() - cpu_started
    results = evaluate_sysu_embedder(root, torch_embed_fn(Embedder(net)), embedder_id="trained", **evaluate)
    write_report(results, Path(args.out).parent, name="synthetic_learnability_resnet18")
    report["resnet18_trained"] = summary(results)
    report["training"] = {
        "wall_seconds": round(train_s, 1),
        "cpu_seconds": round(train_cpu_s, 1),
        "input_size": [args.train_height, args.train_width],
        "steps": steps,
        "epochs_started": epoch,
        "batch": f"{args.ids_per_batch} ids x {args.images_per_id} images (half infrared, half visible)",
        "last_stride": args.last_stride,
        "cpu_seconds_per_step": round(train_cpu_s / max(steps, 1), 3),
        "loss_first_20": float(np.mean(losses[:20])),
        "loss_last_20": float(np.mean(losses[-20:])),
        "threads": args.threads,
    }
    report["machine"] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    report["note"] = "metrics in percent, mean over 10 trials; SYSU protocols on the synthetic set"
    atomic_write_text(args.out, json.dumps(to_jsonable(report), indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
