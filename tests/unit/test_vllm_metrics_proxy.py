"""vLLM's metrics and output in a container: its vllm:* series come out through the generation service's own
/metrics (vLLM listens on 127.0.0.1 only), its Prometheus logger is on, and its output goes to the container log."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aerplane.common.ops import new_registry
from aerplane.common.process import ManagedProcess
from aerplane.generation.backends.vllm_server import vllm_server_argv
from aerplane.generation.metrics import GenerationMetrics, VLLMMetricsProxy


def _vllm_like_page() -> bytes:
    """What vLLM's /metrics serves: vllm:* families beside the process and Python collectors."""
    registry = CollectorRegistry()
    Counter("vllm:generation_tokens", "Generated tokens", ["model_name"], registry=registry).labels("policy").inc(42)
    Gauge("vllm:kv_cache_usage_perc", "KV-cache use", ["model_name"], registry=registry).labels("policy").set(0.25)
    Gauge("process_resident_memory_bytes", "RSS", registry=registry).set(1e9)
    return generate_latest(registry)


@pytest.fixture
def vllm_metrics_url() -> Iterator[str]:
    page = _vllm_like_page()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def test_generation_metrics_carry_vllms_series_and_only_those(vllm_metrics_url: str) -> None:
    registry = new_registry()
    GenerationMetrics(registry)
    registry.register(VLLMMetricsProxy(vllm_metrics_url))
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "aerplane_generation_requests" in families
    assert families["vllm:generation_tokens"].samples[0].value == 42
    assert families["vllm:kv_cache_usage_perc"].samples[0].labels == {"model_name": "policy"}
    assert "process_resident_memory_bytes" not in families, "vLLM's process collector would clash with ours"


def test_an_unreachable_vllm_leaves_the_services_own_metrics_alone() -> None:
    registry = new_registry()
    GenerationMetrics(registry)
    registry.register(VLLMMetricsProxy("http://127.0.0.1:9/metrics", timeout=0.5))
    text = generate_latest(registry).decode()
    assert "aerplane_generation_requests_total" in text and "vllm:" not in text


def test_vllm_keeps_its_prometheus_logger_and_listens_on_loopback() -> None:
    argv = vllm_server_argv(Path("/m"), port=8100)
    assert "--disable-log-stats" not in argv, "in vLLM 0.32 it removes the Prometheus logger: empty vllm:* panels"
    assert argv[argv.index("--host") + 1] == "127.0.0.1", "/collective_rpc must not leave the container"


def test_a_child_without_a_log_file_can_write_to_the_services_own_output(capfd: pytest.CaptureFixture[str]) -> None:
    code = "import sys; print('to stdout'); print('to stderr', file=sys.stderr)"
    proc = ManagedProcess("child", [sys.executable, "-c", code], inherit_output=True).start()
    assert proc.proc is not None and proc.proc.wait(timeout=30) == 0
    out, _ = capfd.readouterr()
    assert "to stdout" in out and "to stderr" in out
