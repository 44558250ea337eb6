"""Prometheus metrics: the HTTP services serve /metrics and /ready on their admin port (never
on the public one), the writer on its metrics port; label values stay bounded."""

from __future__ import annotations

import re

import httpx

from shared.local import processes
from tests.conftest import ApiKey, Service, Stack, make_key, private_stack, run_triggers, start_service, wait_until


def value(text: str, name: str) -> float:
    """The sum of a metric's samples (all label sets) in a Prometheus exposition."""
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def test_ingest_counts_accepted_and_refused_events_and_key_cache_hits(
    http: httpx.Client, ingest: Service, api_key: ApiKey
) -> None:
    before = http.get(f"{ingest.admin_url}/metrics").text
    assert (
        http.post(f"{ingest.url}/events", json={"event_type": "m", "payload": {}}, headers=api_key.headers).status_code
        == 202
    )
    assert (
        http.post(f"{ingest.url}/events", json={"event_type": "", "payload": {}}, headers=api_key.headers).status_code
        == 400
    )
    after = http.get(f"{ingest.admin_url}/metrics").text
    assert value(after, "triggers_events_accepted_total") == value(before, "triggers_events_accepted_total") + 1
    refused = 'triggers_events_refused_total{reason="VALIDATION_ERROR"}'
    assert value(after, refused) == value(before, refused) + 1
    assert value(after, "triggers_key_cache_total") >= value(before, "triggers_key_cache_total") + 2
    assert value(after, "triggers_sqs_send_seconds_count") > value(before, "triggers_sqs_send_seconds_count")


def test_the_writer_serves_its_lag_and_outcomes(http: httpx.Client, stack: Stack) -> None:
    own = private_stack(stack)
    port = processes.free_port()
    key = make_key(own)
    ingest = start_service(own, "ingest")
    writer = start_service(own, "writer", {"TRIGGERS_METRICS_PORT": str(port)})
    try:
        for n in range(3):
            http.post(f"{ingest.url}/events", json={"event_type": "m", "payload": {"n": n}}, headers=key.headers)
        http.post(f"{ingest.url}/events", json={"event_type": "m", "payload": {"n": 0}}, headers=key.headers)

        def scraped() -> str:
            try:
                return http.get(f"http://127.0.0.1:{port}/metrics").text
            except httpx.HTTPError:
                return ""

        assert wait_until(lambda: value(scraped(), 'triggers_writer_events_total{outcome="stored"}') == 3)
        assert wait_until(lambda: value(scraped(), 'triggers_writer_events_total{outcome="duplicate"}') == 1)
        text = scraped()
        assert value(text, "triggers_writer_lag_seconds_count") == 3
        assert value(text, "triggers_writer_batch_messages_count") >= 1
    finally:
        processes.stop([ingest.process, writer.process])


def test_metrics_and_readiness_are_served_on_the_admin_port_only(
    http: httpx.Client, ingest: Service, inbox: Service
) -> None:
    for service in (ingest, inbox):
        for path in ("/metrics", "/ready"):
            public = http.get(f"{service.url}{path}")
            assert public.status_code == 404, (service.url, path)
            assert public.json()["error_code"] == "NOT_FOUND"
            assert "triggers_" not in public.text
        assert http.get(f"{service.url}/status").json()["status"] == "ok"  # liveness stays public
        scraped = http.get(f"{service.admin_url}/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        assert "triggers_http_requests_total" in scraped.text
        ready = http.get(f"{service.admin_url}/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ok"
        assert http.get(f"{service.admin_url}/status").json()["status"] == "ok"
        assert http.get(f"{service.admin_url}/events").status_code == 404
        assert http.post(f"{service.admin_url}/metrics").status_code == 405


def _request_series(text: str) -> dict[str, float]:
    """Label set -> value of every triggers_http_requests_total sample."""
    pattern = re.compile(r"^triggers_http_requests_total(\{[^}]*\}) (\S+)$", re.MULTILINE)
    return {labels: float(v) for labels, v in pattern.findall(text)}


def test_made_up_methods_and_paths_add_no_series(http: httpx.Client, ingest: Service, inbox: Service) -> None:
    for service in (ingest, inbox):
        before = _request_series(http.get(f"{service.admin_url}/metrics").text)
        methods = [http.request(f"M{n}", f"{service.url}/status").status_code for n in range(40)]
        paths = [http.get(f"{service.url}/made/up/{n}").status_code for n in range(40)]
        assert set(paths) == {404}
        assert all(400 <= status < 500 for status in methods), set(methods)
        after = _request_series(http.get(f"{service.admin_url}/metrics").text)
        added = set(after) - set(before)
        # At most one series per (folded method, status) these requests can produce.
        assert len(added) <= 1 + len(set(methods)), added
        others = sum(v for labels, v in after.items() if 'method="OTHER"' in labels)
        others_before = sum(v for labels, v in before.items() if 'method="OTHER"' in labels)
        assert others - others_before == 40
        assert not any(f'method="M{n}"' in labels for n in range(40) for labels in after)


def test_an_admin_port_that_cannot_be_had_stops_the_service_with_a_reason(stack: Stack, ingest: Service) -> None:
    """Another service's admin port, a port past 65535, several workers on one admin port:
    each refused before serving, saying why (the second would otherwise share the port, or
    serve with no admin listener at all)."""
    taken = ingest.admin_url.rsplit(":", 1)[1]
    public = str(processes.free_port())
    for args, wanted in (
        (["--port", public, "--admin-port", taken], f"127.0.0.1:{taken} cannot be used"),
        (["--port", "65000"], "admin port 66000 is out of range"),
        (["--port", public, "--workers", "2"], "--workers above 1 needs --admin-port 0"),
    ):
        refused = run_triggers(stack, "run", "ingest", *args, check=False)
        assert refused.returncode != 0, args
        assert wanted in refused.stderr, (args, refused.stderr)
    # The service that holds the port still answers on it, for itself.
    assert httpx.get(f"{ingest.admin_url}/ready").status_code == 200
