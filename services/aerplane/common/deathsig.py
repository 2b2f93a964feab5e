"""`python -m aerplane.common.deathsig PARENT_PID PROGRAM [ARGS...]`: run PROGRAM, and kill its whole process group
when process PARENT_PID, the one that started us, dies — however it dies (`ManagedProcess(die_with_parent=True)`).

This process leads the group (ManagedProcess starts it in a session of its own) and waits for PROGRAM, which runs in
the same group, so the group takes PROGRAM's own children too (vLLM's engine core, a resource tracker) — a bare
PR_SET_PDEATHSIG on PROGRAM would kill PROGRAM alone and orphan them. Linux delivers SIGTERM to this process when
its parent dies; a SIGTERM while the parent lives is an ordinary stop (ManagedProcess.stop signals the whole group),
so it waits for PROGRAM to finish. The exit status is PROGRAM's (128 + N for a signal N).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from aerplane.common.process import set_parent_death_signal


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: python -m aerplane.common.deathsig PARENT_PID PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    parent = int(argv[0])

    def on_signal(signum: int, _frame: object) -> None:
        if os.getppid() != parent:  # the parent is gone: take the whole group down, this process last
            os.killpg(os.getpgrp(), signal.SIGKILL)
        # otherwise the stop signal went to the whole group: PROGRAM got it too; wait for it below

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    if not set_parent_death_signal(signal.SIGTERM, parent):
        return 1
    child = subprocess.Popen(argv[1:])
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
