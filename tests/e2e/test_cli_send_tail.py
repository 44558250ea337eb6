"""`triggers send` and `triggers tail` as subprocesses against the real services: what send
accepts is stored and tail prints it as sent; --ack leaves the inbox empty; what is refused
is not stored; another account's events are untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.ops.devtools import BATCH_EVENTS
from shared.ops.failures import ExitCode
from tests.conftest import ApiKey, Service, Stack, make_key, run_triggers, wait_until

pytestmark = pytest.mark.usefixtures("writer")


def _json_lines(text: str) -> list[Any]:
    """JSON Lines end at "\\n" only: a payload may hold U+2028, U+0085 or U+001C, which JSON
    leaves unescaped and ``str.splitlines`` would take for line ends."""
    return [json.loads(line) for line in text.split("\n") if line]


def _undelivered(http: httpx.Client, inbox: Service, key: ApiKey) -> dict[str, Any]:
    answer = http.get(f"{inbox.url}/inbox", params={"limit": 200}, headers=key.headers)
    assert answer.status_code == 200
    page: dict[str, Any] = answer.json()
    return page


def _wait_stored(http: httpx.Client, inbox: Service, key: ApiKey, count: int) -> None:
    assert wait_until(lambda: _undelivered(http, inbox, key)["total_undelivered"] == count), count


def _send(stack: Stack, ingest: Service, key: ApiKey, *args: str) -> subprocess.CompletedProcess[str]:
    return run_triggers(stack, "send", "--key", key.key, "--ingest-url", ingest.url, *args, check=False)


def _tail(stack: Stack, inbox: Service, key: ApiKey, *args: str) -> list[dict[str, Any]]:
    result = run_triggers(stack, "tail", "--key", key.key, "--inbox-url", inbox.url, "--interval", "0.1", *args)
    assert result.stderr == ""
    return _json_lines(result.stdout)


def test_send_then_tail_with_ack_round_trip(
    stack: Stack, ingest: Service, inbox: Service, http: httpx.Client, key_factory: Any
) -> None:
    mine, other = key_factory(), key_factory()
    payload = {"order_id": 42, "name": "Zoë ☃", "nested": {"list": [1, 2.5, None, True]}}
    bystander = http.post(
        f"{ingest.url}/events", json={"event_type": "other.kept", "payload": {"n": 1}}, headers=other.headers
    )
    assert bystander.status_code == 202

    sent = _send(stack, ingest, mine, "--type", "order.created", "--data", json.dumps(payload))
    assert sent.returncode == 0, sent.stderr
    accepted = json.loads(sent.stdout)
    assert accepted["status"] == "accepted"

    printed = _tail(stack, inbox, mine, "--ack", "--count", "1")
    assert len(printed) == 1
    assert printed[0]["event_id"] == accepted["event_id"]
    assert printed[0]["event_type"] == "order.created"
    assert printed[0]["payload"] == payload
    # Acknowledged: the inbox is empty, the event reads back delivered; the bystander's stays.
    page = _undelivered(http, inbox, mine)
    assert page["events"] == []
    assert page["total_undelivered"] == 0
    by_id = http.get(f"{inbox.url}/events/{accepted['event_id']}", headers=mine.headers).json()
    assert by_id["delivered"] is True
    _wait_stored(http, inbox, other, 1)
    assert _undelivered(http, inbox, other)["events"][0]["event_type"] == "other.kept"


def test_a_file_of_events_each_answered_the_refused_one_not_stored(
    stack: Stack, ingest: Service, inbox: Service, http: httpx.Client, api_key: ApiKey, tmp_path: Path
) -> None:
    lines = [
        json.dumps({"event_type": "file.a", "payload": {"n": 1}}),
        "",  # blank lines are skipped, numbering goes on
        json.dumps({"payload": {"n": 2}}),  # takes --type
        json.dumps({"event_type": "", "payload": {"n": 3}}),  # refused by the service
    ]
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    result = _send(stack, ingest, api_key, "--file", str(events), "--type", "file.default")
    assert result.returncode == ExitCode.FAILED
    assert result.stderr.strip() == "Error: 1 of 3 events refused"
    answers = _json_lines(result.stdout)
    assert [a["line"] for a in answers] == [1, 3, 4]
    assert [a.get("status") for a in answers] == ["accepted", "accepted", None]
    assert answers[2]["error"]["status"] in {400, 422}

    printed = _tail(stack, inbox, api_key, "--count", "2")  # without --ack: left undelivered
    assert sorted((e["event_type"], e["payload"]["n"]) for e in printed) == [("file.a", 1), ("file.default", 2)]
    assert {e["event_id"] for e in printed} == {answers[0]["event_id"], answers[1]["event_id"]}
    page = _undelivered(http, inbox, api_key)
    assert page["total_undelivered"] == 2
    assert len(page["events"]) == 2


def test_a_file_that_fails_part_way_printed_each_line_of_the_batches_answered_before(
    stack: Stack, ingest: Service, tmp_path: Path
) -> None:
    # A bucket of 510 events a minute: the first batch (lines 1-500) passes, the second
    # (501-1000) would wait about a minute, past the client's longest Retry-After: refused whole.
    key = make_key(stack, rate_limit=BATCH_EVENTS + 10)
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps({"event_type": "part", "payload": {"n": n}}) + "\n" for n in range(1000)))
    result = _send(stack, ingest, key, "--file", str(events))
    assert result.returncode == ExitCode.UNREACHABLE
    assert result.stderr.startswith("Error: the service is unavailable (429")
    assert len(result.stderr.splitlines()) == 1
    # What was answered is on stdout, line by line, before the failure: the lines accepted.
    answers = _json_lines(result.stdout)
    assert [a["line"] for a in answers] == list(range(1, BATCH_EVENTS + 1))
    assert {a["status"] for a in answers} == {"accepted"}


def test_a_malformed_file_sends_nothing(stack: Stack, api_key: ApiKey, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_type": "ok", "payload": {}}\n{not json\n')
    # A closed ingest URL: had the CLI sent anything it would fail to connect (exit 3), not 2.
    result = run_triggers(
        stack, "send", "--key", api_key.key, "--file", str(events), "--ingest-url", "http://127.0.0.1:9", check=False
    )
    assert result.returncode == ExitCode.USAGE
    assert "line 2 is not JSON; nothing was sent" in result.stderr
    assert result.stdout == ""


def test_tail_filters_by_type_and_acknowledges_only_what_it_printed(
    stack: Stack, ingest: Service, inbox: Service, http: httpx.Client, api_key: ApiKey
) -> None:
    for event_type in ("kind.a", "kind.b", "kind.a"):
        assert _send(stack, ingest, api_key, "--type", event_type, "--data", "{}").returncode == 0
    _wait_stored(http, inbox, api_key, 3)
    printed = _tail(stack, inbox, api_key, "--type", "kind.b", "--ack", "--count", "1")
    assert [e["event_type"] for e in printed] == ["kind.b"]
    left = _undelivered(http, inbox, api_key)
    assert sorted(e["event_type"] for e in left["events"]) == ["kind.a", "kind.a"]
    assert left["total_undelivered"] == 2


def test_tail_follows_until_ctrl_c_and_exits_cleanly(
    stack: Stack, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    args = [sys.executable, "-m", "shared.ops.cli", "tail", "--inbox-url", inbox.url, "--interval", "0.1"]
    env = {**os.environ, **stack.env, "TRIGGERS_API_KEY": api_key.key}
    with subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as tail:
        try:
            # Sent while tail already runs: it prints what arrives, not only what was there.
            for n in range(2):
                assert _send(stack, ingest, api_key, "--type", "live", "--data", json.dumps({"n": n})).returncode == 0
            assert tail.stdout is not None
            seen = [json.loads(tail.stdout.readline()) for _ in range(2)]
            tail.send_signal(signal.SIGINT)
            _, stderr = tail.communicate(timeout=30)
        finally:
            tail.kill()
    assert sorted(e["payload"]["n"] for e in seen) == [0, 1]
    assert tail.returncode == 0
    assert "Traceback" not in stderr


def test_an_account_instead_of_a_key_uses_a_temporary_key_revoked_at_exit(
    stack: Stack, ingest: Service, inbox: Service, http: httpx.Client, api_key: ApiKey
) -> None:
    account = ["--account", api_key.account_id]
    sent = run_triggers(stack, "send", *account, "--ingest-url", ingest.url, "--type", "temp", "--data", '{"x": 1}')
    event_id = json.loads(sent.stdout)["event_id"]
    tailed = run_triggers(stack, "tail", *account, "--inbox-url", inbox.url, "--ack", "--count", "1")
    assert json.loads(tailed.stdout)["event_id"] == event_id
    assert _undelivered(http, inbox, api_key)["total_undelivered"] == 0
    listed = run_triggers(stack, "keys", "list", "--account", api_key.account_id, "--json").stdout
    temporary = [json.loads(line) for line in listed.splitlines() if json.loads(line)["key_id"] != api_key.key_id]
    assert len(temporary) == 2
    assert {k["status"] for k in temporary} == {"revoked"}


def test_the_key_from_triggers_key_the_name_triggers_up_prints(
    stack: Stack, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    # No --key, and TRIGGERS_API_KEY gone even if the caller's shell has one: only TRIGGERS_KEY.
    env = {name: value for name, value in {**os.environ, **stack.env}.items() if name != "TRIGGERS_API_KEY"}
    env["TRIGGERS_KEY"] = api_key.key

    def triggers(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "shared.ops.cli", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

    payload = {"from": "TRIGGERS_KEY", "n": 7}
    sent = triggers("send", "--ingest-url", ingest.url, "--type", "env.key", "--data", json.dumps(payload))
    assert sent.returncode == 0, sent.stderr
    event_id = json.loads(sent.stdout)["event_id"]
    tailed = triggers("tail", "--inbox-url", inbox.url, "--interval", "0.1", "--count", "1")
    assert tailed.returncode == 0, tailed.stderr
    (printed,) = _json_lines(tailed.stdout)
    assert (printed["event_id"], printed["event_type"], printed["payload"]) == (event_id, "env.key", payload)


def test_a_refused_key_is_one_line_and_exit_4(stack: Stack, ingest: Service, inbox: Service) -> None:
    bad = ApiKey("trg_" + "x" * 40, "", "")
    for result in (
        _send(stack, ingest, bad, "--type", "t", "--data", "{}"),
        run_triggers(stack, "tail", "--key", bad.key, "--inbox-url", inbox.url, check=False),
    ):
        assert result.returncode == ExitCode.CREDENTIALS
        assert result.stderr.startswith("Error: the API key was refused (401")
        assert len(result.stderr.splitlines()) == 1


def test_an_unusable_service_url_is_one_line_and_exit_6(stack: Stack, api_key: ApiKey) -> None:
    for result in (
        run_triggers(stack, "send", "--key", api_key.key, "--ingest-url", "localhost:8000", "--type", "t", check=False),
        run_triggers(stack, "tail", "--key", api_key.key, "--inbox-url", "ftp://localhost:8001", check=False),
    ):
        assert result.returncode == ExitCode.CONFIGURATION, result.stderr
        assert result.stderr.startswith("Error: "), result.stderr
        assert "url" in result.stderr  # it names the option's URL
        assert "http" in result.stderr  # and the schemes it takes
        assert len(result.stderr.splitlines()) == 1


_payloads = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=12), st.booleans(), st.none()),
    max_size=4,
)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.tuples(st.sampled_from(["p.a", "p.b"]), _payloads), min_size=1, max_size=12))
def test_property_what_a_file_sends_tail_prints_as_sent(
    stack: Stack, ingest: Service, inbox: Service, http: httpx.Client, events: list[tuple[str, dict[str, Any]]]
) -> None:
    key = make_key(stack)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.jsonl"
        path.write_text("".join(json.dumps({"event_type": t, "payload": p}) + "\n" for t, p in events))
        sent = _send(stack, ingest, key, "--file", str(path))
    assert sent.returncode == 0, sent.stderr
    ids = [answer["event_id"] for answer in _json_lines(sent.stdout)]
    printed = _tail(stack, inbox, key, "--ack", "--count", str(len(events)))
    assert {e["event_id"]: (e["event_type"], e["payload"]) for e in printed} == dict(zip(ids, events, strict=True))
    assert _undelivered(http, inbox, key)["total_undelivered"] == 0
