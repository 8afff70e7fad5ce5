"""The demo's model: a synthetic training set -> the small MPANet recipe -> ONNX + linker calibration.

This is the training half of ``python run_pipeline.py`` (the demo). It lives in ``engines`` because
it trains (``trainer``) and exports (``engines.export``); the streaming half (scene, nodes, linker,
summary) is :mod:`edge.demo`, which only receives the finished engine's path.

Everything is cached under ``<cache_dir>/demo-model-<key>/``, keyed by the recipe file's text, its
overrides and the training-set settings, so a changed recipe trains a new model and a second demo
starts at once. An interrupted training resumes from its last checkpoint; two demos sharing a cache
wait for each other instead of training the same model twice (an exclusive lock file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DemoDataSettings",
    "DemoModelSettings",
    "default_cache_dir",
    "describe_models",
    "prepare_demo_model",
]


@dataclass(frozen=True)
class DemoDataSettings:
    """The synthetic training set the demo model learns from (``mpanet-synth --layout sysu``).

    Attributes:
        ids: number of procedural people.
        images_per_camera: images per person and camera.
        height, width: image size in pixels.
        seed: the generator's seed (the same seed renders the same people).
    """

    ids: int = 100
    images_per_camera: int = 12
    height: int = 128
    width: int = 64
    seed: int = 0


@dataclass(frozen=True)
class DemoModelSettings:
    """What :func:`prepare_demo_model` needs.

    Attributes:
        recipe: the training config (YAML) of the demo model.
        train_overrides: ``key=value`` overrides applied on top of the recipe.
        data: the synthetic training set.
        cache_dir: the cache root; empty means :func:`default_cache_dir`.
        progress: progress bars while generating and training.
    """

    recipe: Path
    train_overrides: tuple[str, ...] = ()
    data: DemoDataSettings = field(default_factory=DemoDataSettings)
    cache_dir: str = ""
    progress: bool = True


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mpanet-edge``, else ``~/.cache/mpanet-edge``."""
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


def _cache_folder(settings: DemoModelSettings) -> Path:
    """The cache folder of this recipe + overrides + training set."""
    if not settings.recipe.is_file():
        raise FileNotFoundError(f"demo recipe {settings.recipe} does not exist")
    identity = json.dumps(
        {
            "recipe": settings.recipe.read_text(),
            "overrides": list(settings.train_overrides),
            "data": dataclasses.asdict(settings.data),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(identity.encode()).hexdigest()[:12]
    root = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()
    return root / f"demo-model-{key}"


def prepare_demo_model(settings: DemoModelSettings) -> Path:
    """The demo's ONNX model: from the cache, or generated data -> trained -> exported (resumable).

    Returns:
        the path of ``mpanet-demo.onnx``; its sidecar (``.onnx.json``) and the linker calibration
        (``.onnx.linking.json``) lie beside it.
    """
    cache = _cache_folder(settings)
    model = cache / "mpanet-demo.onnx"
    data_root = cache / "data"
    with _locked(cache / ".lock"):
        if model.is_file() and (cache / "mpanet-demo.onnx.json").is_file():
            if not (cache / "mpanet-demo.onnx.linking.json").is_file():
                _calibrate_linking(model, data_root)
            print(f"[demo] model: {model} (cached)")
            return model
        _write_training_set(settings, data_root)
        final = _train(settings, data_root, cache / "run")
        from engines.export import export_onnx

        print("[demo] exporting to ONNX (parity checked against torch)")
        export_onnx(final, model)
        _calibrate_linking(model, data_root)
    return model


def _write_training_set(settings: DemoModelSettings, data_root: Path) -> None:
    """Render the synthetic SYSU-MM01-layout training set unless it is already complete."""
    if (data_root / "synthetic.json").is_file():
        return
    from trainer.synthetic.datasets import write_sysu

    data = settings.data
    print(f"[demo] generating the synthetic training set ({data.ids} people) in {data_root}")
    write_sysu(
        data_root,
        num_ids=data.ids,
        images_per_camera=data.images_per_camera,
        height=data.height,
        width=data.width,
        seed=data.seed,
        workers=os.cpu_count() or 1,
        progress=settings.progress,
        overwrite=True,
    )


def _train(settings: DemoModelSettings, data_root: Path, run_dir: Path) -> Path:
    """Train the recipe on CPU (resuming an interrupted run); returns ``checkpoints/final.pt``."""
    from common.configuring import load_config
    from trainer.config import TrainConfig
    from trainer.data import load_train_samples

    num_ids = len({s.label for s in load_train_samples(data_root, "sysu")})
    cfg = load_config(
        TrainConfig,
        [settings.recipe],
        [
            *settings.train_overrides,
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
            f"[demo] training the small MPANet recipe ({settings.recipe.name}) on CPU"
            f"{' (resuming)' if resume else ''}"
        )
        Trainer(cfg, init_process("cpu"), resume=resume, progress_bar=settings.progress).fit()
    return final


def _calibrate_linking(model: Path, data_root: Path) -> None:
    """Linker thresholds for this model, measured on the held-out people of its synthetic set."""
    from engines.linking_thresholds import calibrate_artifact

    print("[demo] measuring the linker's cosine thresholds on held-out people")
    result = calibrate_artifact(model, data_root)
    print(
        f"[demo]   same modality >= {result['cosine_min_same']:.3f} (AUC {result['same']['auc']:.3f}), "
        f"cross modality >= {result['cosine_min_cross']:.3f} (AUC {result['cross']['auc']:.3f})"
    )


def describe_models(recipe: Path, train_overrides: Sequence[str] = ()) -> list[str]:
    """One line each for the default MPANet (what configs/sysu.yaml trains) and the demo's model."""
    from trainer.cli.info import summarize_model

    default = summarize_model(overrides=["model.pretrained=null"])
    small = summarize_model([recipe], ["model.pretrained=null", *train_overrides])
    return [
        f"[demo] {name}: {info['parameters']:,} parameters, embedding size {info['embedding_dim']}, "
        f"input {info['input'][1]}x{info['input'][2]}, {info['arch']}"
        for name, info in (("default MPANet (ResNet-50, 384x128)", default), ("demo MPANet", small))
    ]
