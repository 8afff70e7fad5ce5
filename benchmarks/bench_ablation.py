"""Evidence for the small CPU recipe: full MPANet vs the same network without MAM, PAM and MML.

On one generated synthetic SYSU-MM01-layout set (fixed seed, held-out test identities), both
variants train with ``configs/synthetic-cpu.yaml`` on the same budget (same epochs, batches and
seed), each in its own process, and are scored on the SYSU protocols (all-search single-shot, 10
trials: official-style picks from the set's own ``rand_perm_cam.mat``). Also reported: the chance
level of the same protocol (random distance matrices), training images/s and peak memory.

    python benchmarks/bench_ablation.py                       # ~25 min on 2 cores
    python benchmarks/bench_ablation.py --epochs 2 --ids 40   # a quick look

Writes ``benchmarks/results/ablation_cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_file import machine_info, write_report  # noqa: E402

VARIANTS = {
    "full MPANet": [],
    "without MAM, PAM, MML": ["model.mam=false", "model.pam=false", "loss.mml=false"],
}


def chance_level(root: Path, trials: int, draws: int = 20, seed: int = 0) -> dict[str, float]:
    """Mean metrics of random rankings on the all-search single-shot protocol."""
    from trainer.data import sysu_mm01
    from trainer.evaluation.metrics import evaluate_sysu

    test_set = sysu_mm01.load_test_set(root)
    q_pids = np.asarray([s.pid for s in test_set.query])
    q_cams = np.asarray([s.camid for s in test_set.query])
    rng = np.random.default_rng(seed)
    totals: dict[str, list[float]] = {"rank1": [], "rank10": [], "mAP": [], "mINP": []}
    for trial in range(trials):
        gallery = test_set.gallery("all", 1, trial)
        g_pids = np.asarray([s.pid for s in gallery])
        g_cams = np.asarray([s.camid for s in gallery])
        for _ in range(draws):
            metrics = evaluate_sysu(rng.random((len(q_pids), len(g_pids))), q_pids, g_pids, q_cams, g_cams)
            for key in totals:
                totals[key].append(float(metrics[key]))
    return {k: float(np.mean(v)) for k, v in totals.items()}


def train(name: str, overrides: list[str], root: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from trainer.data import load_train_samples

    num_ids = len({s.label for s in load_train_samples(root, "sysu")})
    command = [
        sys.executable,
        "-m",
        "trainer.cli.train",
        "--no-progress",
        "--config",
        str(REPO / "configs" / "synthetic-cpu.yaml"),
        f"data.root={root}",
        f"run.output_dir={out}",
        f"model.num_classes={num_ids}",
        *(
            [
                f"optim.epochs={args.epochs}",
                f"optim.milestones=[{max(1, int(args.epochs * 0.75))}]",
                f"eval.start_epoch={args.epochs}",
            ]
            if args.epochs
            else []
        ),
        *overrides,
    ]
    started = time.time()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    final_eval = [m for m in metrics if m["kind"] == "eval"][-1]
    return {
        "overrides": overrides,
        "wall_seconds": round(time.time() - started, 1),
        "images_per_second": summary["images_per_second"],
        "peak_memory_mb": summary["peak_memory_mb"],
        "all_single_shot": {k: final_eval[f"all_1shot/{k}"] for k in ("rank1", "rank10", "mAP", "mINP")},
        "first_loss": next(m["loss"] for m in metrics if m["kind"] == "train"),
        "last_loss": [m["loss"] for m in metrics if m["kind"] == "train"][-1],
        "command": " ".join(command[1:]),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Synthetic SYSU-layout set: {report['dataset']['ids']} identities ({report['dataset']['test_ids']} held out), "
        f"seed {report['dataset']['seed']}; recipe configs/synthetic-cpu.yaml; all-search single-shot, "
        f"{report['trials']} trials; {report['machine']['cpus']} CPU cores.",
        "",
        "| variant | R1 | R10 | mAP | mINP | train images/s | peak memory (MiB) | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["variants"].items():
        m = row["all_single_shot"]
        lines.append(
            f"| {name} | {100 * m['rank1']:.1f} | {100 * m['rank10']:.1f} | {100 * m['mAP']:.1f} | {100 * m['mINP']:.1f} "
            f"| {row['images_per_second']:.1f} | {row['peak_memory_mb']:.0f} | {row['wall_seconds'] / 60:.1f} min |"
        )
    c = report["chance"]
    lines.append(
        f"| chance (random ranking) | {100 * c['rank1']:.1f} | {100 * c['rank10']:.1f} | {100 * c['mAP']:.1f} | {100 * c['mINP']:.1f} | | | |"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default="/tmp/mpanet-ablation", help="dataset and run folders")
    parser.add_argument("--ids", type=int, default=100)
    parser.add_argument("--images-per-camera", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=0, help="0: the recipe's own")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ablation_cpu"))
    args = parser.parse_args()
    from common.files import atomic_write_text
    from trainer.synthetic.datasets import write_sysu

    work = Path(args.work)
    root = work / "data"
    if not (root / "synthetic.json").is_file():
        write_sysu(
            root,
            num_ids=args.ids,
            images_per_camera=args.images_per_camera,
            seed=args.seed,
            workers=os.cpu_count() or 1,
            progress=False,
            overwrite=True,
        )
    test_ids = len((root / "exp" / "test_id.txt").read_text().strip().split(","))
    report: dict[str, Any] = {
        "dataset": {
            "ids": args.ids,
            "test_ids": test_ids,
            "images_per_camera": args.images_per_camera,
            "seed": args.seed,
        },
        "trials": 10,
        "machine": machine_info(),
        "chance": chance_level(root, trials=10),
        "variants": {},
    }
    for name, overrides in VARIANTS.items():
        run_dir = work / name.split()[0]
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        report["variants"][name] = train(name, overrides, root, run_dir, args)
        print(name, json.dumps(report["variants"][name]["all_single_shot"]), flush=True)
    full, ablated = (report["variants"][n]["all_single_shot"]["rank1"] for n in VARIANTS)
    report["full_beats_chance_by"] = full / report["chance"]["rank1"]
    report["full_minus_ablated_rank1"] = full - ablated
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_report(out.with_suffix(".json"), report)
    atomic_write_text(out.with_suffix(".md"), markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
