"""Shared vocabulary of the whole project: modality names, config loading, atomic file writes,
memory measurement.

A package of its own below ``trainer``, ``engines`` and ``edge``: it imports nothing of the project
and neither torch nor numpy (checked by the import-linter contracts in CI).
"""

from common.modality import Modality

__all__ = ["Modality"]
