"""Child processes that die with their parent (`ManagedProcess(die_with_parent=True)`), on real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from aerplane.common.process import ManagedProcess, descendants, live_group_members

# A parent that starts PROGRAM (which starts a grandchild of its own, as vLLM starts its engine core) with
# die_with_parent, prints the wrapper's PID and then waits to be killed.
PARENT = """
import sys, time
from aerplane.common.process import ManagedProcess
program = [sys.executable, "-c",
           "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
           "time.sleep(120)"]
child = ManagedProcess("program", program, die_with_parent=True).start()
print(child.pid, flush=True)
time.sleep(120)
"""


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_childs_whole_group_dies_when_its_parent_is_sigkilled() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        group = int(parent.stdout.readline())
        assert _wait_for(lambda: len(live_group_members(group)) >= 3)  # wrapper, program, grandchild
        parent.kill()
        parent.wait(10)
        assert _wait_for(lambda: not live_group_members(group)), f"left running: {live_group_members(group)}"
    finally:
        parent.kill()
        for pid in live_group_members(group) if "group" in locals() else []:
            os.kill(pid, signal.SIGKILL)


def test_a_child_that_dies_with_its_parent_still_reports_its_own_exit_and_stops_cleanly() -> None:
    done = ManagedProcess("x", [sys.executable, "-c", "import sys; sys.exit(5)"], die_with_parent=True).start()
    assert done.proc is not None and done.proc.wait(timeout=30) == 5

    running = ManagedProcess("y", [sys.executable, "-c", "import time; time.sleep(60)"], die_with_parent=True).start()
    assert _wait_for(lambda: len(descendants(running.pid)) == 1)  # the program under its wrapper
    code = running.stop(timeout=10)
    assert code == 128 + signal.SIGTERM and not live_group_members(running.pid)
