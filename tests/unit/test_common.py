"""The shared plumbing: message encoding and validation, settings errors, the ops server."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import msgpack
import pytest
from pydantic import Field

from aerplane.common import messages as m
from aerplane.common.ops import OpsServer, new_registry
from aerplane.common.process import free_port
from aerplane.common.settings import ServiceSettings, SettingsError, load_settings


def _sample(**kw: object) -> m.GeneratedSample:
    base = dict(
        run_id="r1",
        step=3,
        prompt_id="p7",
        sample_index=1,
        num_samples=4,
        policy_version=2,
        task="math",
        difficulty="hard",
        ground_truth="42",
        prompt_token_ids=[1, 2, 3],
        response_token_ids=[70000, 5],
        logprobs=[-0.25, -1.5],
        response_text="\\boxed{42}",
    )
    base.update(kw)
    return m.GeneratedSample(**base)  # type: ignore[arg-type]


def test_generated_sample_round_trips_with_packed_arrays() -> None:
    s = _sample()
    data = s.encode()
    body = msgpack.unpackb(data, raw=False)
    assert isinstance(body["response_token_ids"], bytes) and len(body["response_token_ids"]) == 8
    assert isinstance(body["logprobs"], bytes) and len(body["logprobs"]) == 8
    assert m.decode(data) == s
    scored = m.ScoredSample.from_generated(s, 1.0, "match")
    back = m.decode(scored.encode(), expect=m.ScoredSample)
    assert back == scored and back.key == s.key


def test_a_scored_sample_carries_the_generated_bytes_unchanged_and_validates_them_on_decode() -> None:
    generated = _sample().encode()
    scored = m.ScoredSample.from_generated(m.decode(generated), 0.5, "mismatch")
    body = msgpack.unpackb(scored.encode(), raw=False)
    assert body == {"k": "scored_sample", "v": 1, "sample": generated, "reward": 0.5, "reason": "mismatch"}
    back = m.decode(scored.encode(), expect=m.ScoredSample)
    assert back == scored and back.response_token_ids == _sample().response_token_ids and back.reward == 0.5

    # Built from fields, not from decoded bytes: the sample is encoded (and checked) here.
    direct = m.ScoredSample.from_generated(_sample(), 1.0, "match")
    assert m.decode(direct.encode()) == direct
    with pytest.raises(m.MessageError, match="sample_index"):
        m.ScoredSample.from_generated(_sample(sample_index=4), 1.0, "match").encode()

    inner = msgpack.unpackb(generated, raw=False)
    inner["step"] = -1
    body["sample"] = msgpack.packb(inner, use_bin_type=True)
    with pytest.raises(m.MessageError, match="sample: step: expected a non-negative integer"):
        m.decode(msgpack.packb(body, use_bin_type=True))
    with pytest.raises(m.MessageError, match="missing fields"):
        m.decode(msgpack.packb({"k": "scored_sample", "v": 1, "sample": generated}, use_bin_type=True))


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"\xc1", "not msgpack"),
        (msgpack.packb([1, 2]), "expected a map"),
        (msgpack.packb({"k": "nope", "v": 1}), "unknown record kind"),
        (msgpack.packb({"k": "event", "v": 99, "run_id": "r", "kind": "x"}), "schema version"),
        (msgpack.packb({"k": "event", "v": 1, "run_id": "r", "kind": "x", "extra": 1}), "unknown fields"),
        (msgpack.packb({"k": "event", "v": 1, "run_id": "r", "kind": 5}), "kind: expected a string"),
        (msgpack.packb({"k": "event", "v": 1, "run_id": "r"}), "missing"),
        (msgpack.packb({"k": "event", "v": 1, "run_id": "r", "kind": "x", "step": -1}), "non-negative"),
        (msgpack.packb({"k": "event", "v": 1, "run_id": "", "kind": "x"}), "run_id"),
    ],
)
def test_decode_rejects_malformed_payloads_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(m.MessageError, match=reason):
        m.decode(payload)


def test_decode_rejects_mismatched_logprobs_and_bad_arrays() -> None:
    body = msgpack.unpackb(_sample().encode(), raw=False)
    body["logprobs"] = body["logprobs"][:4]
    with pytest.raises(m.MessageError, match="logprobs: 1 values for 2"):
        m.decode(msgpack.packb(body, use_bin_type=True))
    body["logprobs"] = b"abc"
    with pytest.raises(m.MessageError, match="multiple of 4"):
        m.decode(msgpack.packb(body, use_bin_type=True))
    with pytest.raises(m.MessageError, match="expected 'rollout_request'"):
        m.decode(_sample().encode(), expect=m.RolloutRequest)


def test_encode_validates() -> None:
    with pytest.raises(m.MessageError, match="sample_index"):
        _sample(sample_index=4).encode()
    with pytest.raises(m.MessageError, match="finite"):
        m.ScoredSample.from_generated(_sample(), float("nan"), "match").encode()


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"response_token_ids": [-1, 5]}, "response_token_ids: .*negative"),
        ({"prompt_token_ids": [2**32]}, "prompt_token_ids: .*greater than maximum"),
        ({"prompt_token_ids": [1.5]}, "prompt_token_ids: .*integer"),
        ({"logprobs": [-0.5, 1e39]}, "logprobs: .*too large"),  # float32 overflows: refused, not stored as inf
        ({"logprobs": [-0.5, "x"]}, "logprobs: .*not a float"),
        ({"logprobs": (-0.5, -1.0)}, None),  # a tuple is a list here
        ({"step": True}, "step: expected a non-negative integer"),
        ({"ground_truth": 42}, "ground_truth: expected a string"),
        ({"response_token_ids": "ab"}, "response_token_ids: expected a list"),
    ],
)
def test_encode_refuses_values_the_wire_cannot_hold(fields: dict, reason: str | None) -> None:
    sample = _sample(**fields)
    if reason is None:
        assert m.decode(sample.encode()).logprobs == [-0.5, -1.0]
        return
    with pytest.raises(m.MessageError, match=reason):
        sample.encode()


def test_an_event_without_its_defaulted_fields_decodes_with_the_defaults() -> None:
    back = m.decode(msgpack.packb({"k": "event", "v": 1, "run_id": "r", "kind": "x"}))
    assert isinstance(back, m.Event) and (back.step, back.detail) == (0, {}) and back.time > 0


class _Demo(ServiceSettings):
    port: int = Field(8000, ge=1, le=65535)
    name: str = "x"


def test_settings_errors_name_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AERPLANE_PORT", "70000")
    with pytest.raises(SettingsError, match=r"demo\.port: .*65535"):
        load_settings(_Demo, section="demo")
    assert load_settings(_Demo, {"port": 9000, "name": None}).port == 9000


def test_ops_server_answers_health_ready_and_metrics() -> None:
    from prometheus_client import Counter

    reg = new_registry()
    Counter("aerplane_demo_things_total", "things", registry=reg).inc(3)
    state = {"ok": False}
    with OpsServer("127.0.0.1", free_port(), reg, lambda: (state["ok"], {"engine": "loading"})) as ops:
        base = f"http://127.0.0.1:{ops.port}"
        assert json.load(urllib.request.urlopen(base + "/healthz")) == {"status": "ok"}
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/readyz")
        assert err.value.code == 503
        state["ok"] = True
        assert json.load(urllib.request.urlopen(base + "/readyz"))["ready"] is True
        text = urllib.request.urlopen(base + "/metrics").read().decode()
        assert "aerplane_demo_things_total 3.0" in text


def test_cli_help_imports_nothing_heavy() -> None:
    out = subprocess.run([sys.executable, "-m", "aerplane.cli", "--help"], capture_output=True, text=True, check=True)
    assert "aerplane" in out.stdout
    mods = subprocess.run(
        [sys.executable, "-c", "import sys, aerplane.cli as c; c.build_parser(); print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for heavy in ("torch", "vllm", "transformers", "fastapi", "grpc"):
        assert f"'{heavy}'" not in mods, f"{heavy} imported by `aerplane --help`"


def test_log_stream_is_stderr_by_default_and_stdout_on_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    from aerplane.common.logs import setup_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        monkeypatch.delenv("AERPLANE_LOG_STREAM", raising=False)
        setup_logging("t1").info("to stderr")
        monkeypatch.setenv("AERPLANE_LOG_STREAM", "stdout")
        setup_logging("t2").info("to stdout")
        setup_logging("t3", stream="stderr").info("forced stderr")
        out, err = capsys.readouterr()
        assert "to stdout" in out and "to stderr" not in out and "forced stderr" not in out
        assert "to stderr" in err and "forced stderr" in err and "[t1 " in err
        monkeypatch.setenv("AERPLANE_LOG_STREAM", "syslog")
        with pytest.raises(ValueError, match="AERPLANE_LOG_STREAM"):
            setup_logging("t4")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.mark.parametrize("name", ["cpu", "gpu", "slim"])
def test_container_images_log_to_stdout(name: str) -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "deploy" / "docker" / f"Dockerfile.{name}").read_text()
    runtime = text.rsplit("\nFROM ", 1)[-1]  # the last stage is what runs
    assert "AERPLANE_LOG_STREAM=stdout" in runtime


def test_one_retry_policy_retries_what_is_retryable_until_its_timeout() -> None:
    import logging

    from aerplane.common.retry import Backoff, call_with_retry

    backoff = Backoff(first_s=0.01, max_s=0.02)
    assert [d for _, d in zip(range(4), backoff.delays(), strict=False)] == [0.01, 0.02, 0.02, 0.02]
    log = logging.getLogger("test.retry")
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "up"

    seen: list[BaseException] = []
    assert (
        call_with_retry(
            flaky,
            retryable=lambda e: isinstance(e, ConnectionError),
            timeout_s=5,
            backoff=backoff,
            what="dep",
            log=log,
            on_retry=seen.append,
        )
        == "up"
    )
    assert len(calls) == 3 and len(seen) == 2

    tries: list[int] = []

    def down() -> None:
        tries.append(1)
        raise ConnectionError("still down")

    with pytest.raises(ConnectionError, match="still down"):  # an outage longer than the timeout: the last error
        call_with_retry(down, retryable=lambda e: True, timeout_s=0.1, backoff=backoff, what="dep", log=log)
    assert len(tries) >= 2

    def refused() -> None:
        raise PermissionError("no")

    calls.clear()
    with pytest.raises(PermissionError):
        call_with_retry(
            lambda: calls.append(1) or refused(),
            retryable=lambda e: isinstance(e, ConnectionError),
            timeout_s=5,
            backoff=backoff,
            what="dep",
            log=log,
        )
    assert calls == [1]  # not retried
