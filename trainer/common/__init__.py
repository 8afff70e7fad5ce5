"""Shared vocabulary of the whole project: modality names, config loading, atomic file writes.

Nothing here imports torch, numpy or any training code; ``engines`` and ``edge`` rely on that.
"""

from trainer.common.modality import Modality

__all__ = ["Modality"]
