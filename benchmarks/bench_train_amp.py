"""Where the training step's time goes, FP32 vs mixed precision: one knob at a time. Writes JSON.

The measured AMP speed-up of the full recipe was 1.44x (1556 vs 2243 images/s on an H200,
``bench_train.py``); this script separates what could make it larger. Every variant runs the
trainer's own ``train_step`` (``trainer.training.step``) on one in-memory batch unless it says so:

- ``fp32``: as the trainer runs without AMP (fused Adam; cuDNN convolutions may use TF32, torch's
  default) and ``fp32_no_tf32`` (TF32 off: the "real" FP32), ``fp32_channels_last``;
- ``amp``: float16 autocast + GradScaler (the trainer's AMP), ``amp_channels_last`` (NHWC memory:
  tensor-core convolutions without layout transposes), ``amp_channels_last_foreach`` (Adam without
  ``fused=True``: the optimizer's share), ``amp_channels_last_compile`` (``torch.compile`` of the
  model), ``amp_channels_last_no_host_sync`` (the same step without the per-step ``float(loss)``
  reads and the finiteness check, which make the CPU wait for the GPU every step: the share of
  host synchronisation), ``bf16_channels_last`` (bfloat16 autocast, no scaler);
- data loading isolated: the trainer's ``DataLoader`` (``CrossModalitySampler``, the training
  transform, ``--workers`` processes, pinned memory) over a synthetic SYSU-layout set, alone
  (images/s it can deliver) and feeding the best in-memory variant (images/s end to end).

``--profile``: the top CUDA kernels of ``fp32`` and ``amp_channels_last`` (torch.profiler).

    python benchmarks/bench_train_amp.py --device cuda      # ~5 min on one H200
    python benchmarks/bench_train_amp.py --tiny             # CPU: a small model, seconds (CI)

Writes ``benchmarks/results/gpu/train_amp.json`` (``--out``). Not yet run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_file import machine_info, write_report  # noqa: E402


@dataclass(frozen=True)
class Variant:
    """One training-step configuration."""

    name: str
    amp: str | None = None  # None, "fp16" (with GradScaler) or "bf16"
    channels_last: bool = False
    fused: bool = True
    compile: bool = False
    host_sync: bool = True
    tf32: bool = True
    cuda_only: bool = False


VARIANTS = (
    Variant("fp32"),
    Variant("fp32_no_tf32", tf32=False, cuda_only=True),
    Variant("fp32_channels_last", channels_last=True),
    Variant("amp", amp="fp16", cuda_only=True),
    Variant("amp_channels_last", amp="fp16", channels_last=True, cuda_only=True),
    Variant("amp_channels_last_foreach", amp="fp16", channels_last=True, fused=False, cuda_only=True),
    Variant(
        "amp_channels_last_no_host_sync", amp="fp16", channels_last=True, host_sync=False, cuda_only=True
    ),
    Variant("amp_channels_last_compile", amp="fp16", channels_last=True, compile=True, cuda_only=True),
    Variant("bf16_channels_last", amp="bf16", channels_last=True, cuda_only=True),
)


class Setup:
    """Model, objective, optimizer and scaler of one variant, and its step function."""

    def __init__(self, args: argparse.Namespace, variant: Variant) -> None:
        from trainer.losses import LossConfig, MPANetObjective
        from trainer.model import build_mpanet

        self.device = torch.device(args.device)
        self.variant = variant
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True
            torch.backends.cudnn.allow_tf32 = variant.tf32
            torch.backends.cuda.matmul.allow_tf32 = False  # torch's default for matmuls
        torch.manual_seed(0)
        network = build_mpanet(arch=args.arch, height=args.height, width=args.width, num_classes=args.classes)
        network = network.to(self.device)
        if variant.channels_last:
            network = network.to(memory_format=torch.channels_last)
        network.train()
        self.network = network
        self.model = torch.compile(network) if variant.compile else network
        self.objective = MPANetObjective(LossConfig(), images_per_id=args.k)
        fused = {"fused": True} if variant.fused else {"foreach": True}
        if not cuda:
            fused = {}
        self.optimizer = torch.optim.Adam(network.parameters(), lr=3.5e-4, weight_decay=5e-4, **fused)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=variant.amp == "fp16")

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.variant.channels_last else images

    def step(self, images: torch.Tensor, labels: torch.Tensor, modality: torch.Tensor) -> None:
        from trainer.training.step import train_step

        v = self.variant
        if v.amp != "bf16" and v.host_sync:
            train_step(
                self.model,
                self.network,
                self.objective,
                self.optimizer,
                self.scaler,
                images,
                labels,
                modality,
                0.2,
                v.amp == "fp16",
            )
            return
        # The trainer's step minus its host reads (bf16 needs no scaler: same step, other dtype).
        self.network.update_mean_classifiers(0.2)
        dtype = torch.bfloat16 if v.amp == "bf16" else torch.float16
        with torch.autocast(device_type=self.device.type, dtype=dtype, enabled=v.amp is not None):
            out = self.model(images, modality)
        result = self.objective(out, labels, modality)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(result.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """P ids x K images, modalities alternating (as the cross-modality sampler gives), on the host."""
    batch = args.ids * args.k
    images = torch.randn(batch, 3, args.height, args.width)
    labels = torch.arange(args.ids).repeat_interleave(args.k)
    modality = torch.tensor([1, 0]).repeat(batch // 2)
    return images, labels, modality


def timed_steps(
    setup: Setup, batches: Callable[[], tuple[Any, Any, Any]], warmup: int, iters: int
) -> dict[str, float]:
    """Images/s and ms per step over ``iters`` steps after ``warmup`` (compile happens in the warm-up)."""
    device = setup.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    count = 0
    started = 0.0
    for i in range(warmup + iters):
        if i == warmup:
            _sync(device)
            started, count = time.perf_counter(), 0
        images, labels, modality = batches()
        setup.step(setup.prepare(images), labels.to(device), modality.to(device))
        count += images.shape[0]
    _sync(device)
    seconds = time.perf_counter() - started
    result = {"images_per_second": count / seconds, "ms_per_step": 1000.0 * seconds / iters}
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def measure_variant(args: argparse.Namespace, variant: Variant) -> dict[str, Any]:
    setup = Setup(args, variant)
    host = synthetic_batch(args)
    on_device = (setup.prepare(host[0]), host[1].to(setup.device), host[2].to(setup.device))
    started = time.perf_counter()
    result = timed_steps(setup, lambda: on_device, args.warmup, args.iters)
    result["wall_seconds_with_warmup"] = time.perf_counter() - started
    return result


def loader_ids(args: argparse.Namespace) -> int:
    """Identities of the synthetic training set the loader reads."""
    return max(args.ids * 2, 8)


def training_loader(args: argparse.Namespace) -> Any:
    """The trainer's loader (sampler, dataset, transform, workers) over a synthetic SYSU-layout set."""
    from torch.utils.data import DataLoader

    from trainer.data import CrossModalitySampler, ReIDImageDataset, load_train_samples
    from trainer.data.transforms import build_train_transform
    from trainer.synthetic.cli import main as synth_main
    from trainer.training.seeded import SeededDataset, SeededSampler

    root = Path(args.work) / f"synthetic-{args.height}x{args.width}"
    if not (root / ".done").is_file():
        code = synth_main(
            [
                "--layout",
                "sysu",
                "--out",
                str(root),
                "--ids",
                str(loader_ids(args)),
                "--images-per-camera",
                "6",
                "--height",
                str(args.height),
                "--width",
                str(args.width),
                "--workers",
                str(max(args.workers, 1)),
                "--quiet",
            ]
        )
        if code not in (0, None):
            raise RuntimeError(f"trainer.synthetic failed with {code}")
        (root / ".done").write_text("ok\n")
    samples = load_train_samples(str(root), "sysu")
    transform = build_train_transform(args.height, args.width, flip_p=0.5, pad=10, erasing_p=0.5)
    base = CrossModalitySampler(samples, num_ids_per_batch=args.ids, images_per_id=args.k, seed=0)
    sampler = SeededSampler(base, 0, base.batch_size, 0)
    return DataLoader(
        SeededDataset(ReIDImageDataset(samples, transform)),
        batch_size=base.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=args.device.startswith("cuda"),
        persistent_workers=args.workers > 0,
    )


def measure_loading(args: argparse.Namespace, best: Variant) -> dict[str, Any]:
    """The loader alone, and the best variant fed by it."""
    loader = training_loader(args)

    def forever() -> Any:
        while True:
            yield from loader

    stream = forever()
    device = torch.device(args.device)
    next(stream)  # worker start-up
    count, started = 0, time.perf_counter()
    for _ in range(args.iters):
        batch = next(stream)
        batch[0].to(device, non_blocking=True)
        count += batch[0].shape[0]
    _sync(device)
    alone = count / (time.perf_counter() - started)
    # The classifier must cover the synthetic set's identities (labels 0..ids-1).
    setup = Setup(argparse.Namespace(**{**vars(args), "classes": max(args.classes, loader_ids(args))}), best)

    def from_loader() -> tuple[Any, Any, Any]:
        images, labels, modality = next(stream)[:3]
        return images, labels, modality

    fed = timed_steps(setup, from_loader, args.warmup, args.iters)
    return {
        "workers": args.workers,
        "loader_alone_images_per_second": alone,
        f"{best.name}_fed_by_loader": fed,
    }


def profile(args: argparse.Namespace, variant: Variant, rows: int = 12) -> list[dict[str, Any]]:
    """The top CUDA (or CPU) ops of a few steps, by self time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    setup = Setup(args, variant)
    host = synthetic_batch(args)
    data = (setup.prepare(host[0]), host[1].to(setup.device), host[2].to(setup.device))
    for _ in range(3):
        setup.step(*data)
    _sync(setup.device)
    cuda = setup.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(5):
            setup.step(*data)
        _sync(setup.device)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)[:rows]
    return [
        {"op": e.key, "self_ms_per_step": getattr(e, key, 0.0) / 1000.0 / 5, "calls": e.count} for e in events
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--ids", type=int, default=16)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--classes", type=int, default=395)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--variants", default="", help="comma-separated subset (default: all for the device)")
    parser.add_argument("--no-loader", action="store_true", help="skip the data-loading measurement")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--tiny", action="store_true", help="CPU smoke run: ResNet-18 64x32, batch 4, 2 steps"
    )
    parser.add_argument("--work", default="/tmp/bench-train-amp")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu" / "train_amp.json"))
    args = parser.parse_args(argv)
    if args.tiny:
        args.device, args.arch, args.height, args.width = "cpu", "resnet18", 64, 32
        args.ids, args.k, args.classes, args.iters, args.warmup, args.workers = 2, 2, 4, 1, 1, 0
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("bench_train_amp: torch sees no CUDA device; use --tiny or --device cpu", file=sys.stderr)
        return 3
    chosen = [v for v in VARIANTS if (cuda or not v.cuda_only)]
    if args.variants:
        wanted = set(args.variants.split(","))
        chosen = [v for v in chosen if v.name in wanted]
    if args.tiny:
        chosen = [v for v in chosen if not v.compile]
    results: dict[str, Any] = {}
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "model": {"arch": args.arch, "input": [args.height, args.width], "classes": args.classes},
        "batch": f"{args.ids} ids x {args.k} images = {args.ids * args.k}",
        "iters": args.iters,
        "results": results,
        "command": " ".join([sys.executable, *sys.argv]),
    }

    def save() -> Variant:
        """Speed-ups so far, the JSON written (a later time limit keeps what was measured); the best."""
        fp32 = results.get("fp32", {}).get("images_per_second")
        speedups = {
            n: r["images_per_second"] / fp32 for n, r in results.items() if fp32 and "images_per_second" in r
        }
        best_name = max(speedups, key=speedups.get) if speedups else "fp32"
        report.update(
            speedup_vs_fp32=speedups, best={"variant": best_name, "speedup": speedups.get(best_name)}
        )
        write_report(args.out, {**report, "machine": machine_info()})
        return next(v for v in VARIANTS if v.name == best_name)

    # torch.compile last (its compile time is the longest and least predictable), data loading before it.
    for variant in sorted(chosen, key=lambda v: v.compile):
        if variant.compile and not args.no_loader and "data_loading" not in report:
            report["data_loading"] = measure_loading(args, save())
        try:
            results[variant.name] = measure_variant(args, variant)
        except Exception as exc:  # e.g. torch.compile without a compiler: record it, keep measuring
            results[variant.name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        print(variant.name, json.dumps(results[variant.name]), flush=True)
        save()
    if not args.no_loader and "data_loading" not in report:
        report["data_loading"] = measure_loading(args, save())
    if args.profile:
        report["profile"] = {
            v: profile(args, next(x for x in VARIANTS if x.name == v))
            for v in ("fp32", "amp_channels_last")
            if v in results
        }
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
