"""Synthetic two-camera scenes (visible + infrared) with MOTChallenge ground truth."""

from edge.scene.generator import (
    CAMERAS,
    GroundTruthBox,
    SceneCamera,
    SceneSettings,
    SyntheticScene,
    SyntheticSceneReader,
    write_scene,
)

__all__ = [
    "CAMERAS",
    "GroundTruthBox",
    "SceneCamera",
    "SceneSettings",
    "SyntheticScene",
    "SyntheticSceneReader",
    "write_scene",
]
