"""Training throughput of the MPANet recipe: one optimisation step (the trainer's own ``train_step``)
on in-memory batches, FP32 vs mixed precision, on CPU or CUDA. Writes JSON.

    python benchmarks/bench_train.py --device cuda --out benchmarks/results/train_gpu.json
    python benchmarks/bench_train.py --device cpu --arch resnet18 --height 128 --width 64 --ids 8 --k 8

Data loading is excluded on purpose (it is measured end to end by ``mpanet-train``'s images/s);
this isolates what the model, the losses and the optimizer cost.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from trainer.losses import LossConfig, MPANetObjective
from trainer.model import build_mpanet
from trainer.training.step import train_step


def measure(args: argparse.Namespace, amp: bool) -> dict[str, float]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_mpanet(arch=args.arch, height=args.height, width=args.width, num_classes=args.classes).to(
        device
    )
    model.train()
    objective = MPANetObjective(LossConfig(), images_per_id=args.k)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=3.5e-4, weight_decay=5e-4, fused=True
    )  # as the trainer
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    batch = args.ids * args.k
    images = torch.randn(batch, 3, args.height, args.width, device=device)
    labels = torch.arange(args.ids, device=device).repeat_interleave(args.k)
    modality = torch.tensor([1, 0], device=device).repeat(batch // 2)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        train_step(model, model, objective, optimizer, scaler, images, labels, modality, 0.2, amp)
    sync()
    start = time.perf_counter()
    for _ in range(args.iters):
        train_step(model, model, objective, optimizer, scaler, images, labels, modality, 0.2, amp)
    sync()
    seconds = time.perf_counter() - start
    result = {
        "images_per_second": batch * args.iters / seconds,
        "seconds_per_step": seconds / args.iters,
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--ids", type=int, default=16, help="P identities per batch")
    parser.add_argument("--k", type=int, default=8, help="K images per identity")
    parser.add_argument("--classes", type=int, default=395)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = parser.parse_args()
    if args.device == "cpu":
        modes = {"fp32": False}
    else:
        modes = {"fp32": False, "amp_fp16": True}
    results = {name: measure(args, amp) for name, amp in modes.items()}
    report = {
        "device": torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "model": {"arch": args.arch, "input": [args.height, args.width], "classes": args.classes},
        "batch": f"{args.ids} ids x {args.k} images = {args.ids * args.k}",
        "iters": args.iters,
        "results": results,
    }
    if "amp_fp16" in results:
        report["amp_speedup"] = (
            results["amp_fp16"]["images_per_second"] / results["fp32"]["images_per_second"]
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
