"""MPANet Edge: the front door.

    python run_pipeline.py                       # the demo (offline, CPU): train -> export -> scene -> link
    python run_pipeline.py demo [key=value ...]  # the same, with overrides (configs/demo.yaml)
    python run_pipeline.py all --config configs/pipeline-replay.yaml    # nodes + linker on this machine
    python run_pipeline.py node --config configs/node-video.yaml        # one edge node
    python run_pipeline.py linker --config configs/linker.yaml          # the linker service
    python run_pipeline.py benchmark --config configs/sysu.yaml data.root=/data/SYSU-MM01 --engine m.onnx
    python run_pipeline.py keys linker edge-0 --dir keys       # CurveZMQ key pairs (= mpanet-keys)

Every role reads YAML from ``configs/`` and ``key=value`` overrides. Ctrl-C / SIGTERM stop cleanly:
nodes send end-of-stream, the linker snapshots, videos and logs are closed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent
_LOG = logging.getLogger("run_pipeline")


# ----------------------------------------------------------------------------------------- the CLI


def _demo_main(argv: Sequence[str]) -> int:
    from common.configuring import ConfigError, load_config, settings_from
    from edge.demo import DemoConfig, format_summary, run_demo
    from engines.demo_model import DemoDataSettings, DemoModelSettings, describe_models, prepare_demo_model

    parser = argparse.ArgumentParser(prog="run_pipeline.py demo", description="The offline demo.")
    parser.add_argument("--config", action="append", default=None, help="YAML (default configs/demo.yaml)")
    parser.add_argument(
        "overrides", nargs="*", help="key=value, e.g. scene.people=8 output_dir=outputs/demo2"
    )
    args = parser.parse_intermixed_args(argv)
    files = args.config if args.config is not None else [REPO / "configs" / "demo.yaml"]
    try:
        demo = load_config(DemoConfig, files, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    recipe = Path(demo.recipe) if Path(demo.recipe).is_absolute() else REPO / demo.recipe
    if demo.progress:
        print("\n".join(describe_models(recipe, demo.train_overrides)))
    if demo.model:
        model = Path(demo.model)
    else:
        settings = DemoModelSettings(
            recipe=recipe,
            train_overrides=tuple(demo.train_overrides),
            data=settings_from(DemoDataSettings, demo.data),
            cache_dir=demo.cache_dir,
            progress=demo.progress,
        )
        model = prepare_demo_model(settings)
    summary = run_demo(demo, model)
    print()
    print(format_summary(summary), end="")
    print(f"\nEverything is in {demo.output_dir}/ (summary.md, side_by_side video, sightings, linker state).")
    return 0


def _all_main(argv: Sequence[str]) -> int:
    from common.configuring import ConfigError, load_config
    from edge.pipeline import PipelineConfig, PipelineError, run_pipeline

    parser = argparse.ArgumentParser(
        prog="run_pipeline.py all", description="Nodes + linker on this machine."
    )
    parser.add_argument("--config", action="append", required=True, help="pipeline YAML (repeatable)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. nodes.0.sources.0.path=a.mp4")
    args = parser.parse_intermixed_args(argv)
    try:
        config = load_config(PipelineConfig, args.config, args.overrides)
        result = run_pipeline(config, progress=not args.no_progress)
    except (ConfigError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.summary, indent=2, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    role = args[0] if args and not args[0].startswith("-") and "=" not in args[0] else "demo"
    rest = args[1:] if args and role == args[0] else args
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if role == "demo":
        return _demo_main(rest)
    if role == "all":
        return _all_main(rest)
    if role == "node":
        from edge.node import main as node_main

        return node_main(rest)
    if role == "linker":
        from edge.linking.__main__ import main as linker_main

        return linker_main(rest)
    if role == "benchmark":
        from engines.cli.evaluate import main as evaluate_main

        return evaluate_main(rest)
    if role == "keys":
        from edge.keys import main as keys_main

        return keys_main(rest)
    print(
        f"error: unknown role {role!r}; use demo, all, node, linker, benchmark or keys (see --help)",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0)
    sys.exit(main())
