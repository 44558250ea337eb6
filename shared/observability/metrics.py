"""Prometheus metrics of every part, in one place so names stay consistent.

Each process has its own registry: the HTTP services serve it at GET /metrics on their
admin port (shared/web/admin.py, never the public one), the writer on TRIGGERS_METRICS_PORT.
Label values are bounded (shared/web/http.py folds unknown methods), so no client can add
series. Run one server worker per container and scale with containers,
so that each scrape sees the whole process (see docs/operations.md).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest, start_http_server

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)

HTTP_REQUESTS = Counter("triggers_http_requests_total", "HTTP requests answered.", ["method", "status"])
HTTP_SECONDS = Histogram("triggers_http_request_seconds", "Time to answer an HTTP request.", buckets=_LATENCY_BUCKETS)

# Bounded labels: the operations this code calls ("dynamodb.Query", "sqs.SendMessageBatch").
AWS_REQUESTS_SENT = Counter("triggers_aws_requests_total", "AWS requests sent, retries included.", ["operation"])

EVENTS_ACCEPTED = Counter("triggers_events_accepted_total", "Events answered 202 (SQS has them).")
EVENTS_REFUSED = Counter("triggers_events_refused_total", "Events refused, by error code.", ["reason"])
KEY_CACHE = Counter("triggers_key_cache_total", "API key verifications, by cache result.", ["result"])
SQS_SEND_SECONDS = Histogram(
    "triggers_sqs_send_seconds", "Duration of SendMessageBatch calls.", buckets=_LATENCY_BUCKETS
)
SQS_SEND_EVENTS = Histogram(
    "triggers_sqs_send_events", "Events carried by one SendMessageBatch.", buckets=_SIZE_BUCKETS
)

WRITER_BATCH_MESSAGES = Histogram(
    "triggers_writer_batch_messages", "Messages per received batch.", buckets=(1, 2, 3, 5, 8, 10)
)
WRITER_EVENTS = Counter(
    "triggers_writer_events_total", "Events handled by the writer, by outcome (stored, duplicate...).", ["outcome"]
)
WRITER_LAG_SECONDS = Histogram(
    "triggers_writer_lag_seconds", "From receipt at the edge to stored in the inbox.", buckets=_LAG_BUCKETS
)
WRITER_DEAD_LETTERS = Counter("triggers_writer_dead_letters_total", "Poison messages sent to the DLQ.")
WRITER_COMMIT_SECONDS = Histogram(
    "triggers_writer_commit_seconds",
    "From a transaction's inbox position stamp to its answer (monotonic clock).",
    buckets=_LATENCY_BUCKETS,
)
WRITER_RESTAMPS = Counter(
    "triggers_writer_restamps_total",
    "Events moved to a fresh inbox position, by cause (late_commit, already_stored).",
    ["cause"],
)
WRITER_RESTAMP_FAILURES = Counter(
    "triggers_writer_restamp_failures_total",
    "Re-stamps that failed, by the outcome the message got instead (retry, unavailable).",
    ["outcome"],
)


def exposition() -> tuple[bytes, str]:
    """The current metrics in Prometheus text format, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST


def serve(port: int) -> None:
    """Serve /metrics from a background thread (for processes without an HTTP server)."""
    start_http_server(port, addr="0.0.0.0")  # noqa: S104 - scraped from outside the container
