"""MPANet Edge: the front door.

    python run_pipeline.py                       # the demo (offline, CPU): train -> export -> scene -> link
    python run_pipeline.py demo [key=value ...]  # the same, with overrides (configs/demo.yaml)
    python run_pipeline.py all --config configs/pipeline-replay.yaml    # nodes + linker on this machine
    python run_pipeline.py node --config configs/node-video.yaml        # one edge node
    python run_pipeline.py linker --config configs/linker.yaml          # the linker service
    python run_pipeline.py benchmark --config configs/sysu.yaml data.root=/data/SYSU-MM01 --engine m.onnx

Every role reads YAML from ``configs/`` and ``key=value`` overrides. Ctrl-C / SIGTERM stop cleanly:
nodes send end-of-stream, the linker snapshots, videos and logs are closed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent
_LOG = logging.getLogger("run_pipeline")


# ------------------------------------------------------------------------------------------ the demo


@dataclass
class DemoDataConfig:
    """The synthetic training set the demo model learns from (``mpanet-synth --layout sysu``)."""

    ids: int = 100
    images_per_camera: int = 12
    height: int = 128
    width: int = 64
    seed: int = 0


@dataclass
class DemoSceneConfig:
    """The synthetic two-camera scene the demo pipeline watches (``python -m edge.scene``)."""

    seed: int = 7
    duration_s: float = 30.0
    fps: float = 10.0
    width: int = 640
    height: int = 480
    people: int = 6


@dataclass
class DemoConfig:
    """``python run_pipeline.py demo`` (defaults in configs/demo.yaml).

    Attributes:
        output_dir: the demo's outputs (scene, sightings, linker state, video, summary).
        cache_dir: where the trained demo model is kept between runs (default
            ``$XDG_CACHE_HOME/mpanet-edge`` or ``~/.cache/mpanet-edge``).
        model: an engine artifact (``.onnx``/``.plan``/``.pt`` with its sidecar) to use instead of
            training the small recipe.
        recipe: the training config of the demo model; ``train_overrides`` apply on top.
        detector: ``ground_truth`` (the scene's boxes: measures linking, not detection) or
            ``offline`` (HOG on the visible camera, the hot-region detector on the thermal one).
        linker_config, linker_overrides: the linker's YAML and ``key=value`` overrides.
        progress: progress bars.
    """

    output_dir: str = "outputs/demo"
    cache_dir: str = ""
    model: str = ""
    recipe: str = "configs/synthetic-cpu.yaml"
    train_overrides: list[str] = field(default_factory=list)
    data: DemoDataConfig = field(default_factory=DemoDataConfig)
    scene: DemoSceneConfig = field(default_factory=DemoSceneConfig)
    detector: str = "ground_truth"
    linker_config: str = "configs/linker.yaml"
    linker_overrides: list[str] = field(default_factory=list)
    progress: bool = True

    def __post_init__(self) -> None:
        from edge.pipeline import SCENE_DETECTORS

        if self.detector not in SCENE_DETECTORS:
            raise ValueError(f"detector must be one of {SCENE_DETECTORS}, got {self.detector!r}")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mpanet-edge"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock file: two demos sharing a cache do not train the same model twice."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_demo_model(demo: DemoConfig) -> Path:
    """The demo's ONNX model: from the cache, or generated data -> trained -> exported (resumable).

    The cache key covers the recipe file, its overrides and the training-set settings, so a changed
    recipe trains a new model; an interrupted training resumes from its last checkpoint.
    """
    from common.configuring import load_config
    from trainer.config import TrainConfig

    recipe = REPO / demo.recipe if not Path(demo.recipe).is_absolute() else Path(demo.recipe)
    if not recipe.is_file():
        raise FileNotFoundError(f"demo recipe {recipe} does not exist")
    identity = json.dumps(
        {
            "recipe": recipe.read_text(),
            "overrides": list(demo.train_overrides),
            "data": dataclasses.asdict(demo.data),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    cache = (Path(demo.cache_dir) if demo.cache_dir else default_cache_dir()) / f"demo-model-{key}"
    model = cache / "mpanet-demo.onnx"
    with _locked(cache / ".lock"):
        data_root = cache / "data"
        if model.is_file() and (cache / "mpanet-demo.onnx.json").is_file():
            if not (cache / "mpanet-demo.onnx.linking.json").is_file():
                _calibrate_linking(model, data_root)
            print(f"[demo] model: {model} (cached)")
            return model
        if not (data_root / "synthetic.json").is_file():
            from trainer.synthetic.datasets import write_sysu

            print(f"[demo] generating the synthetic training set ({demo.data.ids} people) in {data_root}")
            write_sysu(
                data_root,
                num_ids=demo.data.ids,
                images_per_camera=demo.data.images_per_camera,
                height=demo.data.height,
                width=demo.data.width,
                seed=demo.data.seed,
                workers=os.cpu_count() or 1,
                progress=demo.progress,
                overwrite=True,
            )
        from trainer.data import load_train_samples

        num_ids = len({s.label for s in load_train_samples(data_root, "sysu")})
        run_dir = cache / "run"
        cfg = load_config(
            TrainConfig,
            [recipe],
            [
                *demo.train_overrides,
                f"data.root={data_root}",
                f"run.output_dir={run_dir}",
                f"model.num_classes={num_ids}",
            ],
        )
        final = run_dir / "checkpoints" / "final.pt"
        if not final.is_file():
            from trainer.training.distributed import init_process
            from trainer.training.loop import Trainer

            resume = (run_dir / "checkpoints" / "last.pt").is_file()
            print(
                f"[demo] training the small MPANet recipe ({demo.recipe}) on CPU{' (resuming)' if resume else ''}"
            )
            Trainer(cfg, init_process("cpu"), resume=resume, progress_bar=demo.progress).fit()
        from engines.export import export_onnx

        print("[demo] exporting to ONNX (parity checked against torch)")
        export_onnx(final, model)
        _calibrate_linking(model, data_root)
    return model


def _calibrate_linking(model: Path, data_root: Path) -> None:
    """Linker thresholds for this model, measured on the held-out people of its synthetic set."""
    from engines.linking_thresholds import calibrate_artifact

    print("[demo] measuring the linker's cosine thresholds on held-out people")
    result = calibrate_artifact(model, data_root)
    print(
        f"[demo]   same modality >= {result['cosine_min_same']:.3f} (AUC {result['same']['auc']:.3f}), "
        f"cross modality >= {result['cosine_min_cross']:.3f} (AUC {result['cross']['auc']:.3f})"
    )


def run_demo(demo: DemoConfig, scene_identities: tuple[int, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """The whole demo; returns the summary dict (also written to ``<output_dir>/summary.json``).

    ``scene_identities``: ``(dataset_seed, pids)`` makes the scene's people look like those
    identities of a synthetic dataset (the end-to-end test uses people its small model knows).
    """
    from common.configuring import load_config, settings_from
    from edge.linking.config import LinkerConfig
    from edge.pipeline import PipelineConfig, run_pipeline, scene_nodes
    from edge.scene.generator import SceneSettings, write_scene

    out = Path(demo.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if demo.progress:
        _print_models(demo)
    model = Path(demo.model) if demo.model else prepare_demo_model(demo)
    scene_dir = out / "scene"
    s = demo.scene
    settings = settings_from(
        SceneSettings,
        s,
        num_people=s.people,
        dataset_seed=scene_identities[0] if scene_identities else None,
        dataset_pids=scene_identities[1] if scene_identities else (),
    )
    print(f"[demo] rendering the two-camera scene ({s.people} people, {s.duration_s:g} s) in {scene_dir}")
    scene = json.loads(write_scene(settings, scene_dir, progress=demo.progress).read_text())
    nodes, truth = scene_nodes(scene, scene_dir, model, detector=demo.detector)
    linker_overrides = list(demo.linker_overrides)
    from engines.linking_thresholds import load_linking_thresholds
    from engines.sidecar import load_sidecar

    thresholds = load_linking_thresholds(model, load_sidecar(model).engine_id)
    explicit = any(o.startswith("matching.cosine_min_") for o in linker_overrides)
    if thresholds and not explicit:  # the model's measured thresholds, unless set explicitly
        linker_overrides = [
            f"matching.cosine_min_same={thresholds['cosine_min_same']:.4f}",
            f"matching.cosine_min_cross={thresholds['cosine_min_cross']:.4f}",
            *linker_overrides,
        ]
    linker = load_config(LinkerConfig, [REPO / demo.linker_config], linker_overrides)
    pipeline = PipelineConfig(
        output_dir=str(out), mode="replay", nodes=nodes, linker=linker, ground_truth=truth, fresh=True
    )
    print("[demo] running the nodes and the linker over loopback ZeroMQ")
    result = run_pipeline(pipeline, progress=demo.progress)
    summary = {
        "model": str(model),
        "detector": demo.detector,
        "scene": dataclasses.asdict(s),
        "linker_thresholds": {
            "cosine_min_same": linker.matching.cosine_min_same,
            "cosine_min_cross": linker.matching.cosine_min_cross,
            "from": "measured for the model" if thresholds and not explicit else demo.linker_config,
        },
        **result.summary,
    }
    from common.files import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out / "summary.md", format_summary(summary))
    return summary


def _print_models(demo: DemoConfig) -> None:
    """The default MPANet (what configs/sysu.yaml trains) and the small one the demo trains."""
    from trainer.cli.info import summarize_model

    default = summarize_model(overrides=["model.pretrained=null"])
    small = summarize_model([REPO / demo.recipe], ["model.pretrained=null", *demo.train_overrides])
    for name, info in (("default MPANet (ResNet-50, 384x128)", default), ("demo MPANet", small)):
        print(
            f"[demo] {name}: {info['parameters']:,} parameters, embedding size {info['embedding_dim']}, "
            f"input {info['input'][1]}x{info['input'][2]}, {info['arch']}"
        )


def format_summary(summary: dict[str, Any]) -> str:
    """The demo summary as a short markdown report."""
    lines = ["# MPANet Edge demo", ""]
    score = summary.get("score")
    if score:
        lines += [
            f"- people in the scene: {score['people_in_ground_truth']} "
            f"({score['people_in_both_modalities']} seen by both the RGB and the thermal camera)",
            f"- global identities published: {score['identities_published']}, "
            f"{score['identities_in_both_modalities']} of them with tracks in both modalities",
            f"- people correctly linked across modalities: {score['people_linked_across_modalities']} "
            f"of {score['people_in_both_modalities']}",
            f"- cross-modality linking precision {score['cross_modal_precision']:.2f}, "
            f"recall {score['cross_modal_recall']:.2f} (track pairs)",
            f"- IDF1 across both cameras: {score['idf1_online']:.3f} online, {score['idf1_final']:.3f} final",
            f"- detection recall {score['detection_recall']:.2f}, precision {score['detection_precision']:.2f} "
            f"({summary.get('detector')})",
        ]
    lines += [
        f"- sightings: {summary.get('sightings')}, identity updates: {summary.get('identity_updates')}",
        f"- video: {summary.get('side_by_side', 'none')}",
        f"- model: {summary.get('model')}",
    ]
    if "linker_thresholds" in summary:
        t = summary["linker_thresholds"]
        lines.append(
            f"- linker thresholds: cosine >= {t['cosine_min_same']:.3f} same modality, "
            f">= {t['cosine_min_cross']:.3f} across modalities ({t['from']})"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- the CLI


def _demo_main(argv: Sequence[str]) -> int:
    from common.configuring import ConfigError, load_config

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
    summary = run_demo(demo)
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
    print(
        f"error: unknown role {role!r}; use demo, all, node, linker or benchmark (see --help)",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0)
    sys.exit(main())
