"""``mpanet-info``: build a model from a config and print its summary (parameters, embedding size)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.configuring import ConfigError, load_config


def summarize_model(files: Sequence[str] = (), overrides: Sequence[str] = ()) -> dict[str, object]:
    """Build the model of a training config and return its summary as a dict."""
    import torch

    from trainer.config import TrainConfig
    from trainer.model import build_mpanet, count_parameters

    cfg = load_config(TrainConfig, files, overrides)
    model = build_mpanet(cfg.model).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, cfg.model.height, cfg.model.width))
    parts = {
        "backbone": count_parameters(model.backbone),
        "pattern_alignment": count_parameters(model.pattern) if model.pattern is not None else 0,
        "bn_neck": count_parameters(model.neck),
        "classifiers": sum(
            count_parameters(c)
            for c in (model.classifier, model.classifier_visible, model.classifier_infrared)
            if c is not None
        ),
    }
    return {
        "arch": cfg.model.arch,
        "input": [3, cfg.model.height, cfg.model.width],
        "feature_map": list(out.pattern_maps.shape[2:]) if out.pattern_maps is not None else None,
        "embedding_dim": int(out.embeddings.shape[1]),
        "num_classes": cfg.model.num_classes,
        "parameters": count_parameters(model),
        "trainable_parameters": count_parameters(model, trainable_only=True),
        "parameters_by_part": parts,
        "inference_parameters": count_parameters(model.backbone)
        + parts["pattern_alignment"]
        + parts["bn_neck"],
    }


def format_summary(summary: dict[str, object]) -> str:
    parts = summary["parameters_by_part"]
    assert isinstance(parts, dict)
    lines = [
        f"MPANet ({summary['arch']}), input {summary['input']}, final feature map {summary['feature_map']}",
        f"  embedding size        : {summary['embedding_dim']}",
        f"  identities (classes)  : {summary['num_classes']}",
        f"  parameters            : {summary['parameters']:,} ({summary['trainable_parameters']:,} trainable)",
        f"  used at inference     : {summary['inference_parameters']:,} (backbone + PAM + BN neck)",
    ]
    lines += [f"    {name:<20}: {count:,}" for name, count in parts.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mpanet-info", description=__doc__)
    parser.add_argument("--config", action="append", default=[], help="YAML config file (repeatable)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.arch=resnet18")
    args = parser.parse_intermixed_args(argv)
    try:
        print(format_summary(summarize_model(args.config, args.overrides)))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
