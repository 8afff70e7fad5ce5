"""``mpanet-eval``: run the dataset protocols through the deployed runtime and compare artifacts.

mpanet-eval --config configs/sysu.yaml data.root=/data/SYSU-MM01 --checkpoint best.pt
mpanet-eval --config configs/sysu.yaml data.root=/data/SYSU-MM01 --engine mpanet.onnx --engine mpanet.plan
mpanet-eval --config configs/sysu.yaml data.root=/data/SYSU-MM01 --checkpoint best.pt --variants \\
    --compression global --compression pca:256 --output runs/engines-eval

``--checkpoint`` runs the checkpoint through the torch backend; each ``--engine`` (``.onnx`` or
``.plan``) through its runtime. ``--variants`` exports the checkpoint to ONNX FP32, FP16 and INT8
(TensorRT's symmetric Q/DQ and the onnxruntime CPU uint8 graph, calibrated on the dataset's training
split) plus the ``--compression`` variants, and evaluates them
all: the comparison table (torch FP32 vs ONNX FP32 vs FP16 vs INT8 [vs compressed]) of one
checkpoint. The first artifact is the reference for the embedding-agreement column.

The dataset comes from the training config (``data.dataset``, ``data.root``, ``data.regdb_trial``,
``eval.trials``, ``data.test_batch_size``). Results: ``<output>/comparison.md`` and
``comparison.json`` (full protocol results per artifact) and the resolved config.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.cli.common import configure_logging, dataset_items

_LOG = logging.getLogger("mpanet-eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpanet-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", action="append", default=[], help="training config YAML (repeatable)")
    parser.add_argument("--checkpoint", help="MPANet checkpoint (.pt), evaluated with the torch backend")
    parser.add_argument(
        "--engine",
        action="append",
        default=[],
        help="engine artifact (.onnx or .plan) to evaluate (repeatable)",
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="export --checkpoint to ONNX FP32/FP16/INT8 (+ --compression variants) and evaluate them all",
    )
    parser.add_argument(
        "--compression",
        action="append",
        default=[],
        help="with --variants: 'global' or 'pca:K' (PCA fitted on training-split embeddings)",
    )
    parser.add_argument(
        "--calibration-count", type=int, default=256, help="INT8 calibration crops (default 256)"
    )
    parser.add_argument(
        "--pca-fit-count", type=int, default=2000, help="training images to fit PCA on (default 2000)"
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda or cuda:N (TensorRT plans always use CUDA)"
    )
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: all cores)")
    parser.add_argument("--trials", type=int, help="gallery trials (default: eval.trials of the config)")
    parser.add_argument(
        "--output", default="runs/engines-eval", help="output folder (default runs/engines-eval)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "overrides", nargs="*", help="config overrides key=value, e.g. data.root=/data/SYSU-MM01"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    configure_logging(False)
    from common.configuring import ConfigError, load_config, save_resolved_config
    from common.files import atomic_write_text
    from engines.evaluation import comparison_markdown, evaluate_artifacts
    from engines.export import ExportError
    from engines.precision import PrecisionError
    from engines.runtime import EmbedderError
    from engines.sidecar import SidecarError
    from trainer.config import TrainConfig
    from trainer.data.samples import DatasetError
    from trainer.evaluation.reporting import to_jsonable

    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        if not cfg.data.root:
            raise ConfigError("data.root must be set (e.g. data.root=/data/SYSU-MM01)")
        if args.variants and not args.checkpoint:
            raise ConfigError("--variants needs --checkpoint")
        if not (args.checkpoint or args.engine):
            raise ConfigError("nothing to evaluate: give --checkpoint and/or --engine")
        for flag, path in [("--checkpoint", args.checkpoint)] * bool(args.checkpoint) + [
            ("--engine", e) for e in args.engine
        ]:
            if not Path(path).is_file():
                raise ConfigError(f"{flag} {path} does not exist (or is not a file)")
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        save_resolved_config(cfg, output / "config.yaml")
        artifacts: list[str] = [args.checkpoint] if args.checkpoint else []
        if args.variants:
            artifacts += _export_variants(args, cfg, output / "engines")
        artifacts += args.engine
        rows = evaluate_artifacts(
            artifacts,
            cfg.data.dataset,
            cfg.data.root,
            device=args.device,
            trials=args.trials or cfg.eval.trials,
            regdb_trial=cfg.data.regdb_trial,
            batch_size=cfg.data.test_batch_size,
            cache_dir=output / "features",
            progress=not args.no_progress,
            options={"intra_op_threads": args.threads} if args.threads else None,
        )
    except (
        ConfigError,
        DatasetError,
        ExportError,
        PrecisionError,
        SidecarError,
        EmbedderError,
        ValueError,
    ) as exc:
        print(f"mpanet-eval: {exc}", file=sys.stderr)
        return 2
    table = comparison_markdown(rows)
    atomic_write_text(output / "comparison.md", table)
    payload = [
        {
            "label": r.label,
            "artifact": r.artifact,
            "backend": r.backend,
            "precision": r.precision,
            "compression": r.compression,
            "engine_id": r.engine_id,
            "embedding_dim": r.embedding_dim,
            "metrics_percent": r.metrics,
            "cosine_vs_reference": r.cosine_vs_reference,
            "crops_per_second": r.crops_per_second,
            "results": r.results,
        }
        for r in rows
    ]
    atomic_write_text(output / "comparison.json", json.dumps(to_jsonable(payload), indent=2) + "\n")
    print(table)
    print(f"written: {output / 'comparison.md'}, {output / 'comparison.json'}")
    return 0


def _export_variants(args: argparse.Namespace, cfg: Any, folder: Path) -> list[str]:
    """ONNX FP32 (+ FP16, INT8, compressed variants) of ``args.checkpoint`` in ``folder``."""
    from common.files import sha256_file
    from engines.calibration import build_calibration_set
    from engines.compression import compress_artifact
    from engines.export import export_onnx
    from engines.precision import convert_fp16, quantize_int8
    from engines.sidecar import SidecarError, load_sidecar

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "mpanet.onnx"
    try:  # an earlier run's export of the same checkpoint is reused (its sidecar proves which)
        existing = load_sidecar(target)
        reuse = existing.precision == "fp32" and existing.checkpoint_sha256 == sha256_file(args.checkpoint)
    except SidecarError:
        reuse = False
    if reuse:
        _LOG.info(
            "reusing %s (exported from this checkpoint, parity %s)", target, existing.source.get("parity")
        )
    else:
        exported = export_onnx(args.checkpoint, target)
        _LOG.info("ONNX FP32: parity cosine_min %.7f", exported.parity.cosine_min)
    fp32 = types.SimpleNamespace(artifact=target, sidecar=load_sidecar(target))
    fp16 = convert_fp16(fp32.artifact)
    _LOG.info("ONNX FP16: cosine vs FP32 min %.6f", fp16.cosine_min)
    train = dataset_items(cfg.data.dataset, cfg.data.root, split="train", regdb_trial=cfg.data.regdb_trial)
    calibration = build_calibration_set(train, fp32.sidecar.preprocessing, count=args.calibration_count)
    made = [str(fp32.artifact), str(fp16.artifact)]
    for target in ("tensorrt", "cpu"):
        int8 = quantize_int8(fp32.artifact, calibration, target=target)
        _LOG.info(
            "ONNX INT8 for %s (%s): cosine vs FP32 min %.6f", target, calibration.counts(), int8.cosine_min
        )
        made.append(str(int8.artifact))
    for spec in args.compression:
        kind, _, dim_text = spec.partition(":")
        if kind == "global":
            sidecar = compress_artifact(fp32.artifact, "global", dim=int(dim_text) if dim_text else None)
        elif kind == "pca" and dim_text:
            features = _training_features(fp32.artifact, train, args.pca_fit_count, args.threads)
            sidecar = compress_artifact(
                fp32.artifact,
                "pca",
                dim=int(dim_text),
                features=features,
                fit_info={"dataset": cfg.data.dataset, "split": "train", "images": int(features.shape[0])},
            )
        else:
            raise ValueError(f"--compression must be 'global', 'global:D' or 'pca:K', got {spec!r}")
        made.append(str(fp32.artifact.with_name(sidecar.artifact)))
    return made


def _training_features(onnx_path: Path, items: list[Any], count: int, threads: int | None) -> np.ndarray:
    """Embeddings of up to ``count`` training images (seeded subset) through the FP32 ONNX."""
    from engines.runtime import load_embedder
    from trainer.data.samples import Sample
    from trainer.evaluation.features import extract_features

    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(len(items), size=min(count, len(items)), replace=False))
    samples = [Sample(str(items[i][0]), 0, 0, items[i][1]) for i in chosen]
    options = {"intra_op_threads": threads} if threads else {}
    with load_embedder(onnx_path, **options) as embedder:
        h, w = embedder.input_size
        return extract_features(samples, embedder.embed, height=h, width=w, batch_size=32, progress=False)


if __name__ == "__main__":
    sys.exit(main())
