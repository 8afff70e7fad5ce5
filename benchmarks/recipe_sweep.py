"""How the small CPU recipe (configs/synthetic-cpu.yaml) was chosen: variants on one synthetic set.

Each variant trains with the recipe plus its overrides (same data, same seed), then reports the SYSU
all-search single-shot metrics and how separable same-person from other-person *tracklets* are
within and across modalities (ROC AUC, :mod:`engines.linking_thresholds`): the latter is what the
linker needs. Run where compute is cheap (a GPU: ``--device cuda``) with the CPU recipe's epochs
scaled by each variant's CPU cost, so every variant gets the same CPU budget.

    python benchmarks/recipe_sweep.py --device cuda --out benchmarks/results/recipe_sweep.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# name -> overrides. Epochs give each variant about the CPU time of 12 epochs at 128x64
# (measured train step speed on 2 cores: 128x64 62 img/s, 96x48 105 img/s, 64x32 204 img/s).
VARIANTS = {
    "128x64 lr3.5e-4 12ep": ["optim.lr=3.5e-4", "optim.epochs=12", "optim.milestones=[9]"],
    "128x64 lr1e-3 12ep": ["optim.lr=1e-3", "optim.epochs=12", "optim.milestones=[9]"],
    "96x48 lr3.5e-4 20ep": ["model.height=96", "model.width=48", "optim.epochs=20", "optim.milestones=[15]"],
    "96x48 lr1e-3 20ep": [
        "model.height=96",
        "model.width=48",
        "optim.lr=1e-3",
        "optim.epochs=20",
        "optim.milestones=[15]",
    ],
    "64x32 lr1e-3 36ep": [
        "model.height=64",
        "model.width=32",
        "optim.lr=1e-3",
        "optim.epochs=36",
        "optim.milestones=[27]",
    ],
    "128x64 lr3.5e-4 12ep no-erasing": ["optim.epochs=12", "optim.milestones=[9]", "data.erase_prob=0"],
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--work", default="/tmp/recipe-sweep")
    parser.add_argument("--ids", type=int, default=100)
    parser.add_argument("--only", default="", help="comma list of variant names")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "recipe_sweep.json"))
    parser.add_argument("--quick", action="store_true", help="1 epoch per variant (a smoke test)")
    args = parser.parse_args()
    from common.configuring import load_config
    from engines.linking_thresholds import calibrate_thresholds
    from trainer.config import TrainConfig
    from trainer.data import load_train_samples, sysu_mm01
    from trainer.evaluation.features import extract_features, torch_embed_fn
    from trainer.model import EmbeddingHead
    from trainer.synthetic.datasets import write_sysu
    from trainer.training.distributed import init_process
    from trainer.training.loop import Trainer

    work = Path(args.work)
    root = work / "data"
    if not (root / "synthetic.json").is_file():
        write_sysu(
            root, num_ids=args.ids, seed=0, workers=os.cpu_count() or 1, progress=False, overwrite=True
        )
    num_ids = len({s.label for s in load_train_samples(root, "sysu")})
    test_set = sysu_mm01.load_test_set(root)
    samples = test_set.query + test_set.gallery_pool
    results = {}
    names = [n for n in VARIANTS if not args.only or n in args.only.split(",")]
    for name in names:
        out = work / name.replace(" ", "_")
        cfg = load_config(
            TrainConfig,
            [REPO / "configs" / "synthetic-cpu.yaml"],
            [
                f"data.root={root}",
                f"run.output_dir={out}",
                f"model.num_classes={num_ids}",
                f"run.device={args.device}",
                "run.amp=false",
                "run.threads=0",
                "data.workers=8",
                *VARIANTS[name],
                *(
                    [o for o in VARIANTS[name] if o.startswith("optim.epochs")]
                    if not args.quick
                    else ["optim.epochs=1"]
                ),
                "eval.start_epoch=1000",
            ],  # the last epoch is always evaluated
        )
        shutil.rmtree(out, ignore_errors=True)
        result = Trainer(cfg, init_process(args.device), progress_bar=False).fit()
        embed = torch_embed_fn(EmbeddingHead(_load(result.final_checkpoint, args.device)), device=args.device)
        features = extract_features(
            samples, embed, height=cfg.model.height, width=cfg.model.width, progress=False
        )
        features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        tracklets = calibrate_thresholds(
            features, [s.pid for s in samples], [s.camid for s in samples], [str(s.modality) for s in samples]
        )
        summary = result.evaluation["summary"]
        results[name] = {
            "overrides": VARIANTS[name],
            "rank1": summary["all_1shot/rank1"],
            "mAP": summary["all_1shot/mAP"],
            "mINP": summary["all_1shot/mINP"],
            "auc_same_modality": tracklets["same"]["auc"],
            "auc_cross_modality": tracklets["cross"]["auc"],
            "cross_same_person_mean": tracklets["cross"]["same_person_mean"],
            "cross_other_person_mean": tracklets["cross"]["other_person_mean"],
        }
        print(name, json.dumps(results[name]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"ids": args.ids, "device": args.device, "variants": results}, indent=2) + "\n"
    )


def _load(path: Path, device: str):
    from trainer.checkpoint import load_model

    model, _ = load_model(path, map_location=device)
    return model


if __name__ == "__main__":
    main()
