"""Evaluation inside a training run: the dataset protocols on the current weights (rank 0).

SYSU-MM01: all-search single-shot over ``eval.trials`` trials during training (it picks ``best.pt``,
as the official code does); all four protocols at the last epoch. RegDB: both directions of the
trained trial; the selection value is the mean rank-1 of the two directions (official choice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.config import TrainConfig
from trainer.model import EmbeddingHead, MPANet


def evaluate_during_training(
    network: MPANet, cfg: TrainConfig, out_dir: Path, full: bool, progress: bool = True
) -> dict[str, Any]:
    """Score the network on the test split; write the report (markdown, JSON, CMC PNG) to ``out_dir``.

    Returns:
        ``{"results": full results dict, "selection": float, "selection_name": str,
        "summary": flat {"rank1", "mAP", "mINP", "<protocol>/<metric>": ...}}``.
    """
    from trainer.evaluation.features import torch_embed_fn
    from trainer.evaluation.protocols import (
        SYSU_PROTOCOLS,
        evaluate_regdb_embedder,
        evaluate_sysu_embedder,
        scored_protocols,
    )
    from trainer.evaluation.reporting import write_report

    device = str(next(network.parameters()).device)
    embed_fn = torch_embed_fn(EmbeddingHead(network), device=device)
    common = dict(
        embed_fn=embed_fn,
        embedder_id="training",
        height=cfg.model.height,
        width=cfg.model.width,
        batch_size=cfg.data.test_batch_size,
        num_workers=cfg.data.workers,
        progress=progress,
    )
    if cfg.data.dataset == "sysu":
        protocols = SYSU_PROTOCOLS if full else (("all", 1),)
        results = evaluate_sysu_embedder(
            cfg.data.root, protocols=protocols, trials=range(cfg.eval.trials), **common
        )
        if "skipped" in results["protocols"]["all_1shot"]:
            raise ValueError(
                f"cannot evaluate {cfg.data.root}: {results['protocols']['all_1shot']['skipped']}"
            )
        chosen = results["protocols"]["all_1shot"]["mean"]
        selection_name = "sysu all-search single-shot rank1"
        selection = chosen["rank1"]
    else:
        results = evaluate_regdb_embedder(cfg.data.root, trials=(cfg.data.regdb_trial,), **common)
        directions = results["protocols"]
        chosen = {
            k: (directions["visible_to_thermal"]["mean"][k] + directions["thermal_to_visible"]["mean"][k]) / 2
            for k in ("rank1", "mAP", "mINP")
        }
        selection_name = "regdb mean rank1 of both directions"
        selection = chosen["rank1"]
    write_report(results, out_dir)
    summary = {k: float(chosen[k]) for k in ("rank1", "mAP", "mINP")}
    for name, protocol in scored_protocols(results):
        for metric in ("rank1", "rank10", "mAP", "mINP"):
            summary[f"{name}/{metric}"] = float(protocol["mean"][metric])
    return {
        "results": results,
        "selection": float(selection),
        "selection_name": selection_name,
        "summary": summary,
    }
