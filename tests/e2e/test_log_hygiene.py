"""What the services log: one line per request with its id, and never a key, a secret or a payload."""

from __future__ import annotations

import json
import uuid

import httpx

from tests.conftest import ApiKey, Service, Stack, wait_until


def test_no_key_secret_or_payload_reaches_the_logs(
    http: httpx.Client, stack: Stack, ingest: Service, inbox: Service, writer: Service, api_key: ApiKey
) -> None:
    marker = f"payload-secret-{uuid.uuid4().hex}"
    request_id = f"trace-{uuid.uuid4().hex[:12]}"
    sent = http.post(
        f"{ingest.url}/events",
        json={"event_type": "hygiene", "payload": {"card": marker}},
        headers={**api_key.headers, "X-Request-ID": request_id},
    )
    assert sent.status_code == 202
    wrong = api_key.key[:-4] + "AAAA"
    assert http.get(f"{inbox.url}/inbox", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    assert wait_until(lambda: http.get(f"{inbox.url}/inbox", headers=api_key.headers).json()["total_undelivered"] == 1)

    def logged() -> str:
        return "\n".join(path.read_text(errors="replace") for path in stack.logs.glob("*.log"))

    # The writer logs the request id of the event it stored: the trace crosses the queue.
    assert wait_until(lambda: request_id in logged())
    text = logged()
    secret = api_key.key.split("_", 2)[2]
    for forbidden in (api_key.key, secret, wrong, marker):
        assert forbidden not in text
    # Every line of the session's services is one JSON object. (Other tests SIGKILL their
    # own services, which can cut a last line short: their files are only searched above.)
    own = [
        stack.logs / f"{part}-{service.url.rsplit(':', 1)[1]}.log"
        for part, service in (("ingest", ingest), ("inbox", inbox), ("writer", writer))
    ]
    # Lines end with "\n" only: splitlines() would also cut at U+0085 or U+2028, which JSON
    # strings may hold unescaped (a fuzzed request path logged by the request line).
    lines = [json.loads(line) for path in own for line in path.read_text().split("\n") if line]
    request_lines = [line for line in lines if line.get("event") == "request" and line.get("request_id") == request_id]
    assert request_lines
    assert request_lines[0]["status"] == 202
    batch_lines = [line for line in lines if line.get("event") == "batch" and request_id in line.get("request_ids", [])]
    assert batch_lines
    assert batch_lines[0]["stored"] >= 1
