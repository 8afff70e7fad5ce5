"""``mpanet-train``: train MPANet from a config (single process, or DDP under torchrun).

mpanet-train --config configs/sysu.yaml data.root=/data/SYSU-MM01
mpanet-train --config configs/regdb.yaml data.root=/data/RegDB data.regdb_trial=3
torchrun --nproc_per_node=4 -m trainer.cli.train --config configs/sysu.yaml data.root=...
mpanet-train --config configs/sysu.yaml data.root=... --resume      # after an interruption
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from common.configuring import ConfigError, load_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpanet-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", action="append", default=[], help="YAML config file (repeatable, merged in order)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from <run.output_dir>/checkpoints/last.pt"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. model.mam=false loss.mml=false"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from trainer.config import TrainConfig
    from trainer.data.samples import DatasetError
    from trainer.training.distributed import init_process, shutdown
    from trainer.training.loop import Trainer, TrainingSetupError

    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
    except ConfigError as exc:
        print(f"mpanet-train: {exc}", file=sys.stderr)
        return 2
    ctx = init_process(cfg.run.device)
    try:
        result = Trainer(cfg, ctx, resume=args.resume, progress_bar=not args.no_progress).fit()
    except (TrainingSetupError, DatasetError) as exc:
        print(f"mpanet-train: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown(ctx)
    if ctx.is_main:
        summary = {
            "run_dir": str(result.run_dir),
            "final_checkpoint": str(result.final_checkpoint),
            "best_epoch": result.progress.best_epoch,
            "best_value": result.progress.best_value,
            "images_per_second": round(result.images_per_second, 2),
            "peak_memory_mb": round(result.peak_memory_mb, 1),
            "evaluation": result.evaluation.get("summary", {}),
        }
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
