"""What every benchmark writes beside its numbers: the machine, and the JSON file itself (atomically)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from common.files import atomic_write_text


def machine_info() -> dict[str, Any]:
    """CPU count, platform, Python and the load average (the machine is often shared: say so)."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1_5_15_min_at_end": os.getloadavg(),
    }


def write_report(path: str | os.PathLike[str], report: dict[str, Any]) -> Path:
    """Write ``report`` as indented JSON to ``path`` (parents created, atomic) and say where."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {target}")
    return target
