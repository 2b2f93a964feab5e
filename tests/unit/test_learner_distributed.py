"""`learner.distributed.init` as a single process: a one-member group that leaves no rendezvous in the environment."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, os, subprocess, sys
from aerplane.learner import distributed

ctx = distributed.init("cpu")
child = subprocess.run(
    [sys.executable, "-c", "from aerplane.learner import distributed; c = distributed.init('cpu'); print(c.rank)"],
    capture_output=True, text=True, timeout=120,
)
print(json.dumps({
    "rank": ctx.rank,
    "world": ctx.world_size,
    "leaked": sorted(k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k in os.environ),
    "sum": distributed.all_reduce_sum([1.0, 2.0], ctx),
    "child_rc": child.returncode,
    "child_err": child.stderr[-500:],
}))
sys.stdout.flush()
distributed.finish(0)
"""


def test_a_single_process_group_leaves_no_rendezvous_for_its_children():
    """A child that inits its own group while the parent's is up gets its own port (bench/learner.py's memory probe
    used to inherit MASTER_PORT and fail with EADDRINUSE)."""
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert (got["rank"], got["world"], got["leaked"], got["sum"]) == (0, 1, [], [1.0, 2.0])
    assert got["child_rc"] == 0, got["child_err"]
