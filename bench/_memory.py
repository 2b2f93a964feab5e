"""Resident-memory readings shared by the benchmarks (Linux /proc; a module, not a benchmark: `make bench` skips
`_*.py`).

Peak memory of one phase: read `rss_bytes()` before it, `reset_peak_rss()` (True when the kernel reset VmHWM, False
when only the lifetime peak is available), run the phase, then `peak_rss_bytes()`.
"""

from __future__ import annotations

import os
import resource


def rss_bytes() -> int:
    """The process's resident set now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the peak resident set (VmHWM) to the current one; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The peak resident set since the last reset (VmHWM), else the lifetime peak (ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
