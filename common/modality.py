"""The two imaging modalities, one spelling each (``visible`` / ``infrared``).

This module is shared vocabulary: ``engines`` and ``edge`` import it, so it must stay free of torch
and of anything training-specific.
"""

from __future__ import annotations

from enum import StrEnum

# YAML-only aliases accepted by :meth:`Modality.parse`; code always uses the canonical names.
_ALIASES = {
    "visible": "visible",
    "rgb": "visible",
    "vis": "visible",
    "infrared": "infrared",
    "thermal": "infrared",
    "ir": "infrared",
}


class Modality(StrEnum):
    """Imaging modality of an image, a camera or a sighting.

    The integer flag used in tensors is :attr:`flag`: 0 for visible, 1 for infrared.
    """

    VISIBLE = "visible"
    INFRARED = "infrared"

    @property
    def flag(self) -> int:
        """Integer flag used in modality tensors: 0 = visible, 1 = infrared."""
        return 0 if self is Modality.VISIBLE else 1

    @property
    def other(self) -> Modality:
        return Modality.INFRARED if self is Modality.VISIBLE else Modality.VISIBLE

    @classmethod
    def from_flag(cls, flag: int) -> Modality:
        if flag not in (0, 1):
            raise ValueError(f"modality flag must be 0 (visible) or 1 (infrared), got {flag!r}")
        return cls.VISIBLE if flag == 0 else cls.INFRARED

    @classmethod
    def parse(cls, value: str | Modality) -> Modality:
        """Parse ``visible``/``infrared`` or the aliases ``rgb``/``thermal``/``ir`` (case-insensitive)."""
        if isinstance(value, Modality):
            return value
        key = str(value).strip().lower()
        if key not in _ALIASES:
            raise ValueError(
                f"unknown modality {value!r}: expected 'visible' or 'infrared' "
                f"(aliases: {', '.join(sorted(k for k in _ALIASES if k not in ('visible', 'infrared')))})"
            )
        return cls(_ALIASES[key])

    def __str__(self) -> str:  # so f-strings and YAML dumps show the plain name
        return self.value
