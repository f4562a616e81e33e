"""Prometheus metrics (--metrics-bind): counters add up to the requests sent, and a real
Prometheus text parser reads the scrape (issue 7)."""

from __future__ import annotations

import httpx
import pytest
from conftest import RawClient, free_port, running_server
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.rsgi_only


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_counters_add_up_single_process():
    metrics_port = free_port()
    with running_server(
        "raw_app:app",
        "--metrics-bind",
        f"127.0.0.1:{metrics_port}",
        "--limit-request-body",
        "10",
    ) as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            for _ in range(7):
                assert client.get("/").status_code == 200
            for _ in range(3):
                assert client.get("/error/before-start").status_code == 500
        with RawClient(server.port) as raw:
            raw.request("POST", "/echo", headers=[("Content-Length", "11")], body=b"x" * 11)
            assert raw.read_response().status == 413
        samples = scrape(metrics_port)
    assert samples[("rsgi_requests_total", (("status", "2xx"),))] == 7
    assert samples[("rsgi_requests_total", (("status", "5xx"),))] == 3
    assert samples[("rsgi_request_duration_seconds_count", ())] == 10
    assert samples[("rsgi_request_duration_seconds_bucket", (("le", "+Inf"),))] == 10
    assert samples[("rsgi_requests_refused_total", (("status", "413"),))] == 1
    assert samples[("rsgi_requests_in_flight", ())] == 0
    assert samples[("rsgi_sent_bytes_total", ())] >= 7 * len(b"hello")
    assert samples[("rsgi_received_bytes_total", ())] > 0


def test_unknown_path_is_404():
    metrics_port = free_port()
    with running_server("raw_app:app", "--metrics-bind", f"127.0.0.1:{metrics_port}"):
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/other", timeout=5).status_code == 404
