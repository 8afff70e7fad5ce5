"""Peak resident memory of the current process, measured so that a parent's size does not leak in."""

from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """Peak resident set size of this process since it was exec'd, in MiB.

    On Linux ``getrusage(RUSAGE_SELF).ru_maxrss`` is carried over from the parent through fork and
    exec, so a service started by a 1.5 GiB test runner or pipeline reports 1.5 GiB it never used.
    ``VmHWM`` in ``/proc/self/status`` belongs to this process's own address space (reset by exec),
    so it is read first; other systems fall back to ``ru_maxrss`` (bytes on macOS, KiB elsewhere).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # the kernel reports kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0
