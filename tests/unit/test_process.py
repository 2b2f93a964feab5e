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


# Counts the SIGTERMs it gets (one byte per delivery through the wakeup fd: Python runs its handler once for two
# signals that arrive close together), for a second after the first, writes the count to COUNT_FILE and ends by
# SIGTERM's default action. Writes its PID to READY_FILE once it is ready for signals.
COUNTER = """
import os, signal, sys, time
count_file, ready_file = sys.argv[1], sys.argv[2]
r, w = os.pipe()
os.set_blocking(w, False)
signal.set_wakeup_fd(w)
signal.signal(signal.SIGTERM, lambda signum, frame: None)
open(ready_file + ".tmp", "w").write(str(os.getpid()))
os.rename(ready_file + ".tmp", ready_file)
got = os.read(r, 1)
time.sleep(1.0)
os.set_blocking(r, False)
try:
    got += os.read(r, 64)
except BlockingIOError:
    pass
open(count_file, "w").write(str(got.count(bytes([signal.SIGTERM]))))
signal.signal(signal.SIGTERM, signal.SIG_DFL)
os.kill(os.getpid(), signal.SIGTERM)
"""


def _counter(tmp_path) -> tuple[ManagedProcess, int]:
    """A started COUNTER under die_with_parent, once its handler is in place; returns it and the program's PID."""
    ready = tmp_path / "ready"
    argv = [sys.executable, "-c", COUNTER, str(tmp_path / "count"), str(ready)]
    child = ManagedProcess("counter", argv, die_with_parent=True).start()
    assert _wait_for(ready.exists), "the program never started"
    return child, int(ready.read_text())


def test_a_signal_to_the_wrappers_pid_alone_reaches_the_program_once(tmp_path) -> None:
    child, program = _counter(tmp_path)
    try:
        assert program != child.pid and os.getpgid(program) == child.pid
        # The program does not inherit the wrapper's blocked signals.
        blocked = next(line for line in open(f"/proc/{program}/status") if line.startswith("SigBlk:"))
        assert int(blocked.split()[1], 16) == 0, blocked
        # From another process (what `kill PID` with a PID from services.json does); not the parent's group signal.
        subprocess.run([sys.executable, "-c", f"import os; os.kill({child.pid}, {int(signal.SIGTERM)})"], check=True)
        assert child.proc is not None and child.proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert (tmp_path / "count").read_text() == "1"
    finally:
        child.stop(timeout=5)


def test_a_group_signal_from_the_parent_reaches_the_program_once(tmp_path) -> None:
    child, _ = _counter(tmp_path)
    assert child.stop(timeout=30) == 128 + signal.SIGTERM  # ManagedProcess.stop: SIGTERM to the whole group
    assert (tmp_path / "count").read_text() == "1"
    assert not live_group_members(child.pid)


def test_what_the_program_leaves_in_its_group_dies_with_it() -> None:
    # The program starts a grandchild in its group and exits at once: the wrapper reports 3 and takes the grandchild.
    program = [
        sys.executable,
        "-c",
        "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); sys.exit(3)",
    ]
    child = ManagedProcess("leaver", program, die_with_parent=True).start()
    assert child.proc is not None and child.proc.wait(timeout=30) == 3
    assert _wait_for(lambda: not live_group_members(child.pid)), live_group_members(child.pid)
    child.stop()
