"""The engine's calibration in the linker: thresholds measured for the engine, unless set explicitly.

Where a cosine threshold lies depends entirely on the engine (a weakly trained model has
same-person cross-modality cosines around 0.1, a strong one around 0.6), and per modality pair:
``mpanet-calibrate ENGINE --data ...`` (:mod:`engines.cli.calibrate`) measures them and stores
``<engine>.linking.json`` beside the artifact. Every role that runs a linker (``linker``, ``all``,
the demo) resolves its thresholds here, in this order, per threshold:

1. a value set in the linker config (YAML or ``key=value``): ``matching.cosine_min_visible`` /
   ``cosine_min_infrared`` / ``cosine_min_cross``, or ``matching.cosine_min_same`` for both
   same-modality pairs;
2. the engine's calibration (``calibration.engine``: the artifact, or its ``.linking.json``);
3. the defaults (0.5 same modality, 0.3 across), which fit no real engine: a linker running on them
   says so loudly at start (log), in its stats (``calibration.calibrated: false``) and, through the
   stats, in the pipeline's and the demo's ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.modality import Modality
from edge.linking.assignment import MatchingRules

LOG = logging.getLogger("edge.linking")

__all__ = ["CalibrationConfig", "CalibrationReport", "load_calibration", "resolve_thresholds"]

# Resolved threshold name -> (the config fields that set it, most specific first; calibration keys).
_SOURCES = {
    "cosine_min_visible": (
        ("cosine_min_visible", "cosine_min_same"),
        ("cosine_min_visible", "cosine_min_same"),
    ),
    "cosine_min_infrared": (
        ("cosine_min_infrared", "cosine_min_same"),
        ("cosine_min_infrared", "cosine_min_same"),
    ),
    "cosine_min_cross": (("cosine_min_cross",), ("cosine_min_cross",)),
}
PAIRS = ("visible-visible", "infrared-infrared", "visible-infrared")


@dataclass
class CalibrationConfig:
    """Where the linker finds its engine's calibration (the ``calibration`` config section).

    Attributes:
        engine: the engine artifact (its ``<artifact>.linking.json`` is read) or a ``.linking.json``
            file; ``""``: none (the ``all`` role and the demo fill in the nodes' engine).
        require: refuse to start without a calibration (instead of warning).
    """

    engine: str = ""
    require: bool = False


@dataclass(frozen=True)
class CalibrationReport:
    """Which thresholds the linker runs with and where each came from (JSON-ready via to_dict).

    Attributes:
        calibrated: every threshold came from the engine's calibration or the config, none from
            the defaults.
        source: the calibration file read ("" if none).
        engine_id: the engine the calibration was measured for ("" if none).
        thresholds: resolved ``cosine_min_visible`` / ``cosine_min_infrared`` / ``cosine_min_cross``.
        origin: per threshold, ``config``, ``calibration`` or ``default``.
        pairs: per modality pair of the calibration: ROC AUC, threshold, TPR/FPR, sample counts.
        target_fpr: the false-match rate the calibration's thresholds were picked at.
        warning: what is wrong, for people ("" when nothing is).
    """

    calibrated: bool
    source: str = ""
    engine_id: str = ""
    thresholds: dict[str, float] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    pairs: dict[str, Any] = field(default_factory=dict)
    target_fpr: float | None = None
    warning: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_engine(self, engine_id: str) -> str:
        """A warning if the linker's gallery holds another engine than the one calibrated ("" if fine)."""
        if self.engine_id and engine_id and engine_id != self.engine_id:
            return (
                f"the calibration {self.source} was measured for engine {self.engine_id}, but the nodes "
                f"send engine {engine_id}: its thresholds do not apply"
            )
        return ""


def calibration_path(engine: str | Path) -> Path:
    """``<artifact>.linking.json`` of an engine artifact (a ``.linking.json`` path is returned as is)."""
    path = Path(engine)
    return path if path.name.endswith(".linking.json") else path.with_name(path.name + ".linking.json")


def load_calibration(engine: str | Path) -> dict[str, Any] | None:
    """The calibration of ``engine`` (None if it has none).

    Raises:
        ValueError: the file exists but is not a calibration (names the file and the field).
    """
    path = calibration_path(engine)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    for name in ("cosine_min_visible", "cosine_min_infrared", "cosine_min_cross", "cosine_min_same"):
        value = data.get(name)
        if value is not None and not (isinstance(value, int | float) and 0.0 < float(value) <= 1.0):
            raise ValueError(f"{path}: {name} must be a cosine in (0, 1], got {value!r}")
    return data


def resolve_thresholds(
    rules: MatchingRules, calibration: dict[str, Any] | None, source: str = ""
) -> tuple[MatchingRules, CalibrationReport]:
    """Concrete per-modality thresholds: config, else the calibration, else the defaults.

    Returns the rules with ``cosine_min_visible`` / ``cosine_min_infrared`` / ``cosine_min_cross``
    set, and the report of where each came from.
    """
    calibration = calibration or {}
    values: dict[str, float] = {}
    origin: dict[str, str] = {}
    for name, (config_fields, calibration_keys) in _SOURCES.items():
        explicit = next((getattr(rules, f) for f in config_fields if getattr(rules, f) is not None), None)
        if "pairs" in calibration:
            # Per-pair calibration: a pooled same-modality value may stem from the other modality only.
            calibration_keys = calibration_keys[:1]
        measured = next((calibration[k] for k in calibration_keys if calibration.get(k) is not None), None)
        if explicit is not None:
            values[name], origin[name] = float(explicit), "config"
        elif measured is not None:
            values[name], origin[name] = float(measured), "calibration"
        else:
            modality = Modality.INFRARED if name == "cosine_min_infrared" else Modality.VISIBLE
            values[name] = (
                rules.same_threshold(modality) if name != "cosine_min_cross" else rules.cross_threshold
            )
            origin[name] = "default"
    resolved = dataclasses.replace(rules, **values)
    defaults = sorted(n for n, o in origin.items() if o == "default")
    warning = ""
    if defaults:
        what = (
            "no calibration for its engine"
            if not calibration
            else f"a calibration without {', '.join(defaults)}"
        )
        warning = (
            f"UNCALIBRATED LINKER: {what}; {', '.join(defaults)} fall back to defaults that fit no real "
            "engine (run `mpanet-calibrate ENGINE --data ...`, or set calibration.engine / matching.cosine_min_*)"
        )
    report = CalibrationReport(
        calibrated=not defaults,
        source=source if calibration else "",
        engine_id=str(calibration.get("engine_id", "")),
        thresholds=values,
        origin=origin,
        pairs={k: _pair_summary(calibration["pairs"][k]) for k in PAIRS if k in calibration.get("pairs", {})},
        target_fpr=calibration.get("target_fpr", calibration.get("fpr_max")),
        warning=warning,
    )
    return resolved, report


def _pair_summary(entry: dict[str, Any]) -> dict[str, Any]:
    keep = ("threshold", "auc", "tpr", "fpr", "pairs")
    return {k: entry[k] for k in keep if k in entry}


def calibrate_rules(
    rules: MatchingRules, config: CalibrationConfig
) -> tuple[MatchingRules, CalibrationReport]:
    """Load ``config.engine``'s calibration and resolve ``rules`` with it; log a loud warning when
    thresholds fall back to the defaults.

    Raises:
        ValueError: ``config.require`` and no complete calibration; a malformed calibration file.
    """
    calibration = load_calibration(config.engine) if config.engine else None
    source = str(calibration_path(config.engine)) if config.engine else ""
    resolved, report = resolve_thresholds(rules, calibration, source)
    if report.warning:
        if config.require:
            raise ValueError(f"calibration.require is set: {report.warning}")
        LOG.warning("%s", report.warning)
    else:
        LOG.info("linker thresholds %s (%s)", report.thresholds, report.origin)
    return resolved, report
