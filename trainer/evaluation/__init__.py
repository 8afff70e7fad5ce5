"""Evaluation: pure numpy metrics, feature extraction with a disk cache, protocol runners, reports.

``evaluate_sysu`` / ``evaluate_regdb`` (numpy only) are imported eagerly; the rest on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from trainer.evaluation.metrics import evaluate_regdb, evaluate_sysu

_LAZY = {
    "extract_features": "trainer.evaluation.features",
    "feature_cache_key": "trainer.evaluation.features",
    "torch_embed_fn": "trainer.evaluation.features",
    "evaluate_sysu_protocols": "trainer.evaluation.protocols",
    "evaluate_regdb_protocols": "trainer.evaluation.protocols",
    "evaluate_sysu_embedder": "trainer.evaluation.protocols",
    "evaluate_regdb_embedder": "trainer.evaluation.protocols",
    "pairwise_distance": "trainer.evaluation.protocols",
    "write_report": "trainer.evaluation.reporting",
    "results_table_markdown": "trainer.evaluation.reporting",
    "plot_cmc": "trainer.evaluation.reporting",
    "scored_protocols": "trainer.evaluation.protocols",
}

__all__ = ["evaluate_regdb", "evaluate_sysu", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainer.evaluation' has no attribute {name!r}")
