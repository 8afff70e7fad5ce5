"""``mpanet-calibrate ENGINE --data PATH [--data PATH ...]``: the engine's linking thresholds.

Embeds labelled people (:mod:`engines.labelled_material`: SYSU-MM01 / RegDB folders, MOTChallenge
sequences, LLVIP-style paired folders) with the engine, measures the cosine distributions of
same-person and different-people tracklet pairs per modality pair (visible-visible,
infrared-infrared, visible-infrared), picks each threshold at the target false-match rate, and
writes ``<engine>.linking.json`` (thresholds, ROC AUC, sample counts, what it was measured on) and
``<engine>.linking.png`` (the distributions) beside the engine. Every linker fed by this engine
uses them (``edge.linking.calibration``) unless its config sets thresholds explicitly.

Examples::

    mpanet-calibrate model.onnx --data /data/SYSU-MM01                      # its test split
    mpanet-calibrate osnet.onnx --data ../shared/data/real/mot17 --frames 1:2 --target-fpr 0.05
    mpanet-calibrate model.onnx --data mot17/ --data llvip/ --layout mot --layout paired

Pairs a source cannot provide are left out (a visible-only MOT set gives no infrared thresholds;
LLVIP pairs give only visible-infrared ones); the linker then says which thresholds it lacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LOG = logging.getLogger("engines.calibrate")


def _frames(text: str) -> tuple[int, int]:
    try:
        first, _, last = text.partition(":")
        value = (int(first), int(last or first))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--frames takes FIRST:LAST (1-based), got {text!r}") from exc
    if value[0] < 1 or value[1] < value[0]:
        raise argparse.ArgumentTypeError(f"--frames needs 1 <= FIRST <= LAST, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpanet-calibrate",
        description="Measure an engine's linking thresholds per modality pair on labelled people.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1] if __doc__ else None,
    )
    parser.add_argument("engine", help="engine artifact (.onnx / .plan / .pt with its sidecar)")
    parser.add_argument("--data", action="append", required=True, help="labelled material (repeatable)")
    parser.add_argument(
        "--layout",
        action="append",
        choices=("auto", "sysu", "regdb", "mot", "paired"),
        help="layout of each --data (default auto-detected; one per --data, or one for all)",
    )
    parser.add_argument("--split", default="test", choices=("test", "train"), help="SYSU/RegDB split")
    parser.add_argument("--frames", type=_frames, help="MOT frame numbers / pair range FIRST:LAST to use")
    parser.add_argument("--pseudo-cameras", type=int, default=2, help="MOT: frame ranges per sequence")
    parser.add_argument("--target-fpr", type=float, default=0.10, help="false-match rate per pair (0.10)")
    parser.add_argument("--tracklet-size", type=int, default=8, help="images averaged into a tracklet")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", help="calibration JSON (default <engine>.linking.json)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def embed_material(
    engine: str | Path,
    sources: Sequence[tuple[str, str]],
    *,
    frames: tuple[int, int] | None = None,
    pseudo_cameras: int = 2,
    split: str = "test",
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[np.ndarray, list[int], list[int], list[str], str]:
    """Embed every labelled crop of ``sources`` ((layout, root) pairs): (N, D) float32 unit rows,
    pids, camids, modalities, and the engine id."""
    from tqdm import tqdm

    from engines.labelled_material import detect_layout, read_material
    from engines.runtime import load_embedder

    embedder = load_embedder(engine)
    rows: list[np.ndarray] = []
    pids: list[int] = []
    camids: list[int] = []
    modalities: list[str] = []
    bar = tqdm(desc="embedding labelled crops", unit="crop", disable=not progress)
    try:
        for index, (layout, root) in enumerate(sources):
            layout = detect_layout(root) if layout == "auto" else layout
            batch = []
            items = read_material(
                layout, root, source_index=index, frames=frames, pseudo_cameras=pseudo_cameras, split=split
            )
            for item in items:
                batch.append(item.crop)
                pids.append(item.pid)
                camids.append(item.camid)
                modalities.append(item.modality)
                if len(batch) == batch_size:
                    rows.append(embedder.embed_crops(batch, input_order="BGR"))
                    bar.update(len(batch))
                    batch = []
            if batch:
                rows.append(embedder.embed_crops(batch, input_order="BGR"))
                bar.update(len(batch))
    finally:
        bar.close()
    if not rows:
        raise ValueError(f"no labelled people found in {[root for _, root in sources]}")
    embeddings = np.concatenate(rows).astype(np.float32)
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return embeddings, pids, camids, modalities, embedder.engine_id


def calibrate_engine(
    engine: str | Path,
    sources: Sequence[tuple[str, str]],
    *,
    target_fpr: float = 0.10,
    tracklet_size: int = 8,
    out: str | Path | None = None,
    plot: bool = True,
    **embed_options: Any,
) -> dict[str, Any]:
    """Embed, calibrate, and write the JSON (and PNG) beside the engine; returns the result."""
    from engines.linking_thresholds import (
        calibrate_thresholds,
        linking_path,
        plot_distributions,
        save_linking_thresholds,
    )

    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"--target-fpr must be in (0, 1), got {target_fpr}")
    embeddings, pids, camids, modalities, engine_id = embed_material(engine, sources, **embed_options)
    distributions: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    result = calibrate_thresholds(
        embeddings, pids, camids, modalities, tracklet_size, target_fpr, distributions=distributions
    )
    frames = embed_options.get("frames")
    described = ", ".join(f"{layout} {root}" for layout, root in sources)
    if frames:
        described += f" (frames {frames[0]}..{frames[1]})"
    result["images"] = len(pids)
    path = Path(out) if out else linking_path(engine)
    if out:
        from common.files import atomic_write_text

        atomic_write_text(
            path, json.dumps({**result, "engine_id": engine_id, "measured_on": described}, indent=2)
        )
    else:
        save_linking_thresholds(result, engine, engine_id, described)
    if plot:
        result["plot"] = str(plot_distributions(distributions, result, path.with_suffix(".png")))
    result["path"] = str(path)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    layouts = args.layout or ["auto"]
    if len(layouts) == 1:
        layouts = layouts * len(args.data)
    if len(layouts) != len(args.data):
        print(f"error: {len(args.layout)} --layout for {len(args.data)} --data", file=sys.stderr)
        return 2
    try:
        result = calibrate_engine(
            args.engine,
            list(zip(layouts, args.data)),
            target_fpr=args.target_fpr,
            tracklet_size=args.tracklet_size,
            out=args.out,
            plot=not args.no_plot,
            frames=args.frames,
            pseudo_cameras=args.pseudo_cameras,
            split=args.split,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{result['images']} images, {result['tracklets']} tracklets; target false-match rate {args.target_fpr}"
    )
    for pair, entry in result["pairs"].items():
        same, other = entry["pairs"]
        if entry["threshold"] is None:
            print(f"  {pair:18s} not enough pairs ({same} same-person, {other} different)")
        else:
            print(
                f"  {pair:18s} threshold {entry['threshold']:.3f}  AUC {entry['auc']:.3f}  TPR {entry['tpr']:.2f}  "
                f"({same} same-person, {other} different pairs)"
            )
    print(f"written: {result['path']}" + (f", {result['plot']}" if "plot" in result else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
