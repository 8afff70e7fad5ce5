"""Synthetic visible-infrared re-identification data: procedural people, dataset-style crops, and
writers of the real SYSU-MM01 / RegDB folder layouts. numpy + OpenCV only (no torch): the edge
pipeline's scene generator reuses the person renderer.
"""

from trainer.synthetic.person import PersonAppearance, render_person, sample_appearance

__all__ = ["PersonAppearance", "render_person", "sample_appearance"]
