"""Prometheus metrics: the services serve /metrics, the writer on its metrics port."""

from __future__ import annotations

import re

import httpx

from shared import processes
from tests.conftest import ApiKey, Service, Stack, make_key, private_stack, start_service, wait_until


def value(text: str, name: str) -> float:
    """The sum of a metric's samples (all label sets) in a Prometheus exposition."""
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def test_ingest_counts_accepted_and_refused_events_and_key_cache_hits(
    http: httpx.Client, ingest: Service, api_key: ApiKey
) -> None:
    before = http.get(f"{ingest.url}/metrics").text
    assert (
        http.post(f"{ingest.url}/events", json={"event_type": "m", "payload": {}}, headers=api_key.headers).status_code
        == 202
    )
    assert (
        http.post(f"{ingest.url}/events", json={"event_type": "", "payload": {}}, headers=api_key.headers).status_code
        == 400
    )
    after = http.get(f"{ingest.url}/metrics").text
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
