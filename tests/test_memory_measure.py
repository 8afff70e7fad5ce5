"""Peak memory reported by a process is its own, not its parent's (the linker's stats rely on it)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import numpy as np
from conftest import REPO_ROOT

CHILD = "from common.memory import peak_rss_mb; import resource; print(peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"


def test_a_child_of_a_large_process_reports_its_own_peak():
    ballast = np.ones(400 * 2**20, dtype=np.uint8)  # 400 MiB touched in this (the parent) process
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 > 400
    result = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    del ballast
    own, inherited = (float(v) for v in result.stdout.split())
    assert 1 < own < 200, own  # an interpreter with numpy: tens of MiB, not the parent's 400+
    if sys.platform.startswith("linux"):
        assert inherited > 400  # why ru_maxrss is not used: Linux carries it over fork and exec
