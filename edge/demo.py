"""The demo's streaming half: a synthetic RGB + thermal scene -> one node per camera -> the linker.

``python run_pipeline.py`` (the demo) first makes sure there is an engine (the front door trains the
small recipe through :mod:`engines.demo_model` when ``model`` is empty), then :func:`run_demo`
renders the two-camera scene with ground truth, runs the nodes and the linker as separate processes
over loopback ZeroMQ (:func:`edge.pipeline.run_pipeline`), and writes ``summary.json`` /
``summary.md`` (:func:`format_summary`) with the scores against the scene's ground truth.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

__all__ = ["DemoConfig", "DemoDataConfig", "DemoSceneConfig", "format_summary", "run_demo"]


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


def run_demo(
    demo: DemoConfig,
    model: Path | None = None,
    scene_identities: tuple[int, tuple[int, ...]] | None = None,
) -> dict[str, Any]:
    """The streaming half of the demo; returns the summary dict (also ``<output_dir>/summary.json``).

    ``model`` is the engine artifact to run (default ``demo.model``); the front door trains the
    demo's own model first (:func:`engines.demo_model.prepare_demo_model`) when neither is given.
    ``scene_identities``: ``(dataset_seed, pids)`` makes the scene's people look like those
    identities of a synthetic dataset (the end-to-end test uses people its small model knows).
    """
    from common.configuring import load_config, settings_from
    from edge.linking.config import LinkerConfig
    from edge.pipeline import PipelineConfig, run_pipeline, scene_nodes
    from edge.scene.generator import SceneSettings, write_scene

    out = Path(demo.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        if not demo.model:
            raise ValueError("run_demo needs an engine: set demo.model or pass model=")
        model = Path(demo.model)
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
    # The linker takes the model's calibration (<model>.linking.json) where the pipeline starts it,
    # as every role does; explicit matching.cosine_min_* in linker_overrides win.
    linker = load_config(LinkerConfig, [REPO / demo.linker_config], list(demo.linker_overrides))
    if not any(o.startswith("service.publish_endpoint=") for o in demo.linker_overrides):
        # The demo has no outside subscribers: a free loopback port, so that two demos (or a demo
        # and a running linker) on one machine do not collide on the config's fixed port.
        linker = dataclasses.replace(
            linker, service=dataclasses.replace(linker.service, publish_endpoint="tcp://127.0.0.1:auto")
        )
    pipeline = PipelineConfig(
        output_dir=str(out), mode="replay", nodes=nodes, linker=linker, ground_truth=truth, fresh=True
    )
    print("[demo] running the nodes and the linker over loopback ZeroMQ")
    result = run_pipeline(pipeline, progress=demo.progress)
    summary = {
        "model": str(model),
        "detector": demo.detector,
        "scene": dataclasses.asdict(s),
        **result.summary,
    }
    from common.files import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out / "summary.md", format_summary(summary))
    return summary


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
            f"- IDF1 across both cameras: {score['idf1_online']:.3f} online (as published at the time), "
            f"{score['idf1_before_final_pass']:.3f} online at the end, {score['idf1_final']:.3f} final "
            "(after the offline pass)",
            f"- detection recall {score['detection_recall']:.2f}, precision {score['detection_precision']:.2f} "
            f"({summary.get('detector')})",
        ]
    lines += [
        f"- sightings: {summary.get('sightings')}, identity updates: {summary.get('identity_updates')}",
        f"- video: {summary.get('side_by_side', 'none')}",
        f"- model: {summary.get('model')}",
    ]
    calibration = summary.get("calibration")
    if calibration:
        t, origin = calibration["thresholds"], calibration["origin"]
        lines.append(
            f"- linker thresholds: cosine >= {t['cosine_min_visible']:.3f} visible-visible "
            f"({origin['cosine_min_visible']}), >= {t['cosine_min_infrared']:.3f} infrared-infrared "
            f"({origin['cosine_min_infrared']}), >= {t['cosine_min_cross']:.3f} across modalities "
            f"({origin['cosine_min_cross']})"
        )
        if calibration.get("warning"):
            lines.append(f"- WARNING: {calibration['warning']}")
    return "\n".join(lines) + "\n"
