"""`aerplane compare` restarting a run from scratch clears what an earlier attempt left in the shared Redis."""

from __future__ import annotations

import pytest

from aerplane.coefficient.runs import RunExists
from aerplane.coefficient.store import RunStore
from aerplane.common import messages as m
from aerplane.common.streams import StreamClient
from aerplane.launcher.compare import clear_run_state


def test_a_clean_restart_forgets_the_earlier_attempt_and_nothing_else(redis_url: str) -> None:
    store = RunStore(redis_url)
    for run in ("cmp-aer-s1", "cmp-aer-s10"):
        store.start_run(run, "aer", {}, {}, resume=False)
        with StreamClient(redis_url, run) as client:
            client.publish(m.EVENTS, m.Event(run_id=run, kind="tick"))
    with pytest.raises(RunExists):  # what a clean restart met before: the coefficient service refused a new start
        store.start_run("cmp-aer-s1", "aer", {}, {}, resume=False)

    removed = clear_run_state(redis_url, "cmp-aer-s1")
    assert removed >= 2  # its coefficient record(s) and its event stream
    store.start_run("cmp-aer-s1", "aer", {}, {}, resume=False)  # a new start is accepted
    with StreamClient(redis_url, "cmp-aer-s1") as client:
        assert client.length(m.EVENTS) == 0
    with StreamClient(redis_url, "cmp-aer-s10") as client:  # a run whose id only starts the same is untouched
        assert client.length(m.EVENTS) == 1
    with pytest.raises(RunExists):
        store.start_run("cmp-aer-s10", "aer", {}, {}, resume=False)
