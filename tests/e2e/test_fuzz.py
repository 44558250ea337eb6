"""Schemathesis against both services' OpenAPI documents, over HTTP to the real servers.

Every generated request (valid and invalid by the schema) must pass every check schemathesis
has (``checks=all``: no 5xx; documented statuses, headers and bodies; a request the schema
forbids refused and one it allows taken; undeclared methods a 405 whose ``Allow`` lists the
declared ones, and OPTIONS's ``Allow`` too; auth enforced; ...) and, when it is an error, have
the contract's error shape. The examples come from a seed drawn from the commit under test:
each commit explores new inputs, while CI, and anyone re-running a commit, sees the same ones
(a gate that passes or fails by chance blocks unrelated work). Outside a git checkout each run
draws a random seed. A failure names its seed (``TRIGGERS_FUZZ_SEED=<n>`` replays it). The number of
examples is bounded so the suite stays fast; ``TRIGGERS_FUZZ_EXAMPLES`` raises it.
"""

from __future__ import annotations

import os
import random
import subprocess
import zlib
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, seed, settings
from schemathesis.checks import CHECKS, is_check_class, load_all_checks
from schemathesis.specs.openapi.checks import positive_data_acceptance

from inbox_api import app as inbox_app
from inbox_api.openapi import document as inbox_document
from ingest_api import app as ingest_app
from ingest_api.openapi import document as ingest_document
from shared.web.routes import Refusal
from tests.conftest import ApiKey, Service, Stack, make_key

EXAMPLES = int(os.environ.get("TRIGGERS_FUZZ_EXAMPLES", "30"))
ERROR_FIELDS = {"status", "error_code", "message", "details", "correlation_id"}
load_all_checks()
# Every check the installed schemathesis registers (its CLI's --checks all): the class-based,
# run-wide ones are added by validate_response itself.
ALL_CHECKS = [check for check in CHECKS.get_all() if not is_check_class(check)]


def _commit_seed() -> int:
    """The seed of this commit (see the module's docstring), or a random one outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, check=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return random.randrange(2**32)
    return zlib.crc32(head.encode())


SEED = int(os.environ.get("TRIGGERS_FUZZ_SEED") or _commit_seed())
# The 400s each operation's document states for schema-valid requests (shared/web/routes.py).
REFUSALS: dict[tuple[str, str], tuple[Refusal, ...]] = {
    (route.method.upper(), route.path): route.refusals
    for module in (ingest_app, inbox_app)
    for group in module.route_groups()
    for route in group.routes
}

ingest_schema = schemathesis.openapi.from_dict(msgspec.json.decode(ingest_document()))
inbox_schema = schemathesis.openapi.from_dict(msgspec.json.decode(inbox_document()))
fuzz_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _check(case: Any, base_url: str, key: ApiKey) -> None:
    # A real key where the case sends one, so generated requests reach validation and
    # storage; cases that leave Authorization out on purpose must still get 401.
    headers = dict(case.headers or {})
    if "Authorization" in headers:
        headers["Authorization"] = f"Bearer {key.key}"
    # A long poll of a generated request waits up to its wait_s for an event that never
    # comes: at most a second here (tests/e2e/test_long_polling.py tests the waiting).
    for fields in (case.query, case.body):  # only valid waits: an invalid one must stay refused
        if isinstance(fields, dict) and isinstance(fields.get("wait_s"), int | float) and 1 < fields["wait_s"] <= 20:
            fields["wait_s"] = 1
    response = case.call(base_url=base_url, headers=headers, timeout=10)
    # A schema-valid request may still be refused as its document says, and only so.
    excluded = [positive_data_acceptance] if _documented_refusal(case, response) else []
    try:
        case.validate_response(response, checks=ALL_CHECKS, excluded_checks=excluded)
    except Exception as exc:
        exc.add_note(f"TRIGGERS_FUZZ_SEED={SEED} replays this run")
        raise
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == ERROR_FIELDS, body
        assert body["status"] == response.status_code
        assert [body["correlation_id"]] == response.headers["x-request-id"]  # schemathesis lists header values


def _documented_refusal(case: Any, response: Any) -> bool:
    """The answer is one of the operation's documented refusals: a 400 with its code and its
    details, to a request that sent the parameter it is about (a cursor this service never
    issued; an Idempotency-Key header that differs from the body's key; control characters
    in the event type or a key)."""
    if response.status_code != 400:
        return False
    body = response.json()
    fields = [detail["field"] for detail in body["details"]]
    body_fields = [f"$.{name}" for name in case.body] if isinstance(case.body, dict) else []
    sent = {name.lower() for name in (*(case.query or {}), *(case.headers or {}), *body_fields)}
    return any(
        refusal.parameter.lower() in sent
        and body["error_code"] == refusal.code
        and fields == ([refusal.field] if refusal.field else [])
        for refusal in REFUSALS.get((case.method.upper(), case.path), ())
    )


@pytest.fixture(scope="module")
def fuzz_key(stack: Stack) -> ApiKey:
    """One key for every generated case; its limit high enough that the fuzzer never meets it."""
    return make_key(stack, rate_limit=10_000_000)


@ingest_schema.parametrize()
@fuzz_settings
@seed(SEED)
def test_ingest_answers_every_generated_request_per_its_schema(case: Any, ingest: Service, fuzz_key: ApiKey) -> None:
    _check(case, ingest.url, fuzz_key)


@inbox_schema.parametrize()
@fuzz_settings
@seed(SEED)
def test_inbox_answers_every_generated_request_per_its_schema(case: Any, inbox: Service, fuzz_key: ApiKey) -> None:
    _check(case, inbox.url, fuzz_key)


def test_the_fuzzer_reaches_past_authentication(http: httpx.Client, ingest: Service, fuzz_key: ApiKey) -> None:
    """Guard against a fuzz run that only ever saw 401: the key it uses really works."""
    response = http.post(f"{ingest.url}/events", json={"event_type": "fuzz", "payload": {}}, headers=fuzz_key.headers)
    assert response.status_code == 202
