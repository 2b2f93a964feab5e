"""Child processes owned by PID: start, wait for `/readyz`, stop with SIGTERM then SIGKILL.

Used by `aerplane up` and by the test fixtures, so the e2e tests exercise the same supervision code. A child is
started in its own process group so that stopping it also stops whatever it spawned (vLLM's engine core, torchrun's
workers) — never by name, always by the PID we started.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _live_processes() -> Iterator[tuple[int, int, int]]:
    """(pid, ppid, pgrp) of every process that is not a zombie (zombies only wait to be reaped). Linux: /proc."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[0] != "Z":
            yield int(entry.name), int(fields[1]), int(fields[2])


def live_group_members(pgid: int) -> list[int]:
    """PIDs of the processes in group `pgid` that are still running."""
    return [pid for pid, _, group in _live_processes() if group == pgid]


def descendants(pid: int) -> list[int]:
    """Every live process under `pid`, from /proc's parent links (children before grandchildren)."""
    children: dict[int, list[int]] = {}
    for child, parent, _ in _live_processes():
        children.setdefault(parent, []).append(child)
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            out.append(child)
            todo.append(child)
    return out


_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGKILL, parent: int | None = None) -> bool:
    """Have Linux send `sig` to this process when its parent dies (PR_SET_PDEATHSIG; off Linux nothing happens).

    Returns False when the parent — `parent`, or the parent when called — is gone already (it died before the signal
    was armed, so no signal will come): the caller should exit."""
    parent = os.getppid() if parent is None else parent
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    return os.getppid() == parent


class ProcessDied(RuntimeError):
    """A supervised child exited while we waited for it."""


class ManagedProcess:
    """One child process with its log file, started in its own process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        ready_url: str | None = None,
        cwd: Path | None = None,
        inherit_output: bool = False,
        die_with_parent: bool = False,
    ) -> None:
        """`log_path`: the child's stdout and stderr go there; without one they are discarded, or, with
        `inherit_output`, both go to this process's stdout (in a container: the container's log).
        `die_with_parent`: the child's process group is SIGKILLed when this process dies, even by SIGKILL (through
        a small wrapper process that leads the group: `python -m aerplane.common.deathsig`). `pid` is then the
        wrapper's, the group's leader: a signal to the group reaches the program once, and one sent to that PID
        alone by another process is passed on to the program. Start such a child from the main thread (the kernel
        ties the parent-death signal to the thread that forked)."""
        self.name = name
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.log_path = log_path
        self.inherit_output = inherit_output
        self.ready_url = ready_url
        self.cwd = cwd
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The child's PID, which is also its process group's ID (with `die_with_parent`: the wrapper's)."""
        return self.proc.pid if self.proc else None

    def start(self) -> ManagedProcess:
        out: int | IO[bytes] | None = None if self.inherit_output else subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")  # closed in stop()
            out = self._log
        argv = self.argv
        if self.die_with_parent:
            argv = [sys.executable, "-m", "aerplane.common.deathsig", str(os.getpid()), *argv]
        self.proc = subprocess.Popen(
            argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd, start_new_session=True
        )
        return self

    def poll(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()[-20000:].decode("utf-8", "replace")
        return "\n".join(data.splitlines()[-lines:])

    def wait_ready(self, timeout: float, interval: float = 0.25) -> None:
        """Poll `ready_url` until it answers 2xx; raise ProcessDied if the child exits, TimeoutError on timeout."""
        if self.ready_url is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                raise ProcessDied(f"{self.name} exited with code {code} before it was ready:\n{self.log_tail()}")
            if http_ok(self.ready_url):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} not ready at {self.ready_url} after {timeout:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(interval)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the child's process group, wait, then SIGKILL it. Returns the exit code (the program's; with
        `die_with_parent`, 128 + N when signal N ended it, and -9 when the group had to be SIGKILLed)."""
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is None:
                self._signal_group(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.proc.wait(timeout=10)
            # Grandchildren that ignored SIGTERM or outlived their parent (e.g. worker pools, vLLM's engine core).
            self._signal_group(signal.SIGKILL)
            deadline = time.monotonic() + 10
            while live_group_members(self.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            return self.proc.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def kill(self) -> None:
        """SIGKILL the whole group at once (crash simulation)."""
        if self.proc is not None:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
