"""Results of the protocol runners as files: JSON, a markdown table and a CMC curve (PNG)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from common.files import atomic_save, atomic_write_text
from trainer.evaluation.protocols import scored_protocols

__all__ = ["plot_cmc", "results_table_markdown", "to_jsonable", "write_report"]

_COLUMNS = (
    ("rank1", "R1"),
    ("rank5", "R5"),
    ("rank10", "R10"),
    ("rank20", "R20"),
    ("mAP", "mAP"),
    ("mINP", "mINP"),
)


def to_jsonable(value: Any) -> Any:
    """Recursively turn numpy arrays/scalars into lists/Python numbers."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def results_table_markdown(results: dict[str, Any]) -> str:
    """A markdown table: one row per protocol, metrics in percent as ``mean ± std`` over trials."""
    dataset = results.get("dataset", "?")
    lines = [f"Dataset: **{dataset}**"]
    if "gallery_sampling" in results:
        lines.append(f"Gallery sampling: **{results['gallery_sampling']}**")
    lines += [f"Distance: {results.get('distance', '?')}", f"CMC: {results.get('cmc', '?')}", ""]
    lines.append("| protocol | trials | " + " | ".join(label for _, label in _COLUMNS) + " |")
    lines.append("|---|---|" + "---|" * len(_COLUMNS))
    for name, protocol in results["protocols"].items():
        if "skipped" in protocol:
            lines.append(f"| {name} | 0 | skipped: {protocol['skipped']} |" + " |" * (len(_COLUMNS) - 1))
            continue
        cells = []
        for key, _ in _COLUMNS:
            mean, std = 100 * protocol["mean"][key], 100 * protocol["std"][key]
            cells.append(f"{mean:.2f} ± {std:.2f}" if protocol["num_trials"] > 1 else f"{mean:.2f}")
        lines.append(f"| {name} | {protocol['num_trials']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_cmc(results: dict[str, Any], path: str | os.PathLike[str], *, max_rank: int = 20) -> Path:
    """Draw the trial-mean CMC curve of every protocol (ranks 1..max_rank) to a PNG file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=120)
    for name, protocol in scored_protocols(results):
        cmc = np.asarray(protocol["cmc_mean"])[:max_rank] * 100
        axes.plot(np.arange(1, cmc.size + 1), cmc, marker="o", markersize=3, label=name)
    axes.set_xlabel("rank")
    axes.set_ylabel("matching rate (%)")
    title = f"CMC ({results.get('dataset', '?')}"
    title += f", gallery: {results['gallery_sampling']})" if "gallery_sampling" in results else ")"
    axes.set_title(title)
    axes.set_xlim(1, max_rank)
    axes.set_ylim(0, 100)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    target = Path(path)
    atomic_save(target, lambda handle: figure.savefig(handle, format="png"))
    plt.close(figure)
    return target


def write_report(
    results: dict[str, Any], out_dir: str | os.PathLike[str], *, name: str = "results"
) -> dict[str, Path]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>_cmc.png`` into ``out_dir``; return their paths."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": folder / f"{name}.json",
        "markdown": folder / f"{name}.md",
        "cmc": folder / f"{name}_cmc.png",
    }
    atomic_write_text(paths["json"], json.dumps(to_jsonable(results), indent=2) + "\n")
    atomic_write_text(paths["markdown"], results_table_markdown(results))
    plot_cmc(results, paths["cmc"])
    return paths
