"""Schemathesis against both services' OpenAPI documents, over HTTP to the real servers.

Every generated request (valid and invalid by the schema) must get an answer that is not a
5xx, conforms to the documented status codes, headers and bodies, and, when it is an error,
has the contract's error shape. The number of examples is bounded so the suite stays fast;
``TRIGGERS_FUZZ_EXAMPLES`` raises it, and ``TRIGGERS_FUZZ_RANDOM=1`` draws new examples each run.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from inbox_api.openapi import document as inbox_document
from ingest_api.openapi import document as ingest_document
from tests.conftest import ApiKey, Service, Stack, make_key

EXAMPLES = int(os.environ.get("TRIGGERS_FUZZ_EXAMPLES", "30"))
ERROR_FIELDS = {"status", "error_code", "message", "details", "correlation_id"}
CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,  # a request the schema forbids must not be taken (2xx)
)

ingest_schema = schemathesis.openapi.from_dict(msgspec.json.decode(ingest_document()))
inbox_schema = schemathesis.openapi.from_dict(msgspec.json.decode(inbox_document()))
fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
    # The same examples on every run by default, so a failure reproduces;
    # TRIGGERS_FUZZ_RANDOM=1 explores new ones (with TRIGGERS_FUZZ_EXAMPLES for depth).
    derandomize=not os.environ.get("TRIGGERS_FUZZ_RANDOM"),
)


def _check(case: Any, base_url: str, key: ApiKey) -> None:
    # A real key where the case sends one, so generated requests reach validation and
    # storage; cases that leave Authorization out on purpose must still get 401.
    headers = dict(case.headers or {})
    if "Authorization" in headers:
        headers["Authorization"] = f"Bearer {key.key}"
    response = case.call(base_url=base_url, headers=headers, timeout=10)
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == ERROR_FIELDS, body
        assert body["status"] == response.status_code
        assert [body["correlation_id"]] == response.headers["x-request-id"]  # schemathesis lists header values


@pytest.fixture(scope="module")
def fuzz_key(stack: Stack) -> ApiKey:
    """One key for every generated case; its limit high enough that the fuzzer never meets it."""
    return make_key(stack, rate_limit=10_000_000)


@ingest_schema.parametrize()
@fuzz_settings
def test_ingest_answers_every_generated_request_per_its_schema(case: Any, ingest: Service, fuzz_key: ApiKey) -> None:
    _check(case, ingest.url, fuzz_key)


@inbox_schema.parametrize()
@fuzz_settings
def test_inbox_answers_every_generated_request_per_its_schema(case: Any, inbox: Service, fuzz_key: ApiKey) -> None:
    _check(case, inbox.url, fuzz_key)


def test_the_fuzzer_reaches_past_authentication(http: httpx.Client, ingest: Service, fuzz_key: ApiKey) -> None:
    """Guard against a fuzz run that only ever saw 401: the key it uses really works."""
    response = http.post(f"{ingest.url}/events", json={"event_type": "fuzz", "payload": {}}, headers=fuzz_key.headers)
    assert response.status_code == 202
