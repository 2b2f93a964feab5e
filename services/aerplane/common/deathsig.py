"""`python -m aerplane.common.deathsig PARENT_PID PROGRAM [ARGS...]`: run PROGRAM, and kill its whole process group
when process PARENT_PID, the one that started us, dies — however it dies (`ManagedProcess(die_with_parent=True)`).

This process leads the group (ManagedProcess starts it in a session of its own) and waits for PROGRAM, which runs in
the same group, so the group takes PROGRAM's own children too (vLLM's engine core, a verifier pool) — a bare
PR_SET_PDEATHSIG on PROGRAM would kill PROGRAM alone and orphan them. Linux sends this process SIGTERM when its
parent dies (PR_SET_PDEATHSIG, armed before PROGRAM starts), even when the parent was SIGKILLed: no handler of the
parent has to run. The exit status is PROGRAM's (128 + N for a signal N), and once PROGRAM has exited, whatever it
left in the group is SIGKILLed, so nothing of it outlives this process either.

A stop signal (SIGTERM, SIGINT, SIGHUP) is taken synchronously (`sigtimedwait`), so its sender is known:

- the parent is gone: the kernel's parent-death signal; SIGKILL the whole group, this process with it;
- from the parent, which signals the whole group (`ManagedProcess.stop`): PROGRAM got it too, so it is not passed
  on — a second SIGTERM makes redis-server skip its graceful shutdown and uvicorn force-exit;
- from anyone else, sent to this PID (as `kill PID` with the PID `services.json` lists): passed on to PROGRAM.

So the parent must signal the group, never this PID alone, and a third party that signals the whole group gets the
signal to PROGRAM twice. The parent-death signal follows the thread that started this process: start it from a
thread that lives as long as the parent (the main thread).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from aerplane.common.process import live_group_members, set_parent_death_signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Blocked here and taken by sigtimedwait; SIGCHLD wakes the wait as soon as PROGRAM exits.
WAITED = {*STOP_SIGNALS, signal.SIGCHLD}
# Python ignores these at start-up; PROGRAM gets the default back (as subprocess.Popen's restore_signals does).
RESTORED = (signal.SIGPIPE, signal.SIGXFSZ)
POLL_S = 1.0  # a parent that is gone is also noticed without its signal (a fallback; the signal comes first)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        print("usage: python -m aerplane.common.deathsig PARENT_PID PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    parent = int(argv[0])
    if os.getpgrp() != os.getpid():  # killing "the group" must never reach whoever started us
        os.setpgid(0, 0)
    # Blocked before PROGRAM starts, so no signal falls between its start and the wait; PROGRAM starts with an empty
    # mask (setsigmask), not with this one.
    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
    if not set_parent_death_signal(signal.SIGTERM, parent):
        return 1  # the parent died before the signal was armed
    try:
        child = os.posix_spawnp(argv[1], argv[1:], os.environ, setsigmask=(), setsigdef=RESTORED)
    except OSError as exc:
        print(f"aerplane.common.deathsig: cannot run {argv[1]!r}: {exc}", file=sys.stderr)
        return 127
    code = _watch(child, parent)
    for pid in live_group_members(os.getpgrp()):  # what PROGRAM left behind
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return code


def _watch(child: int, parent: int) -> int:
    """Wait for `child` to exit, passing on the stop signals meant for it; its exit status, 128 + N for signal N."""
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code
        # Checked before the sender: the parent-death signal's sender is the dying parent itself.
        if os.getppid() != parent:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        info = signal.sigtimedwait(WAITED, POLL_S)
        if info is None or info.si_signo == signal.SIGCHLD or os.getppid() != parent:
            continue
        if info.si_pid not in (parent, os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, info.si_signo)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
