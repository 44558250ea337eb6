"""The CLI's manners, as an operator meets them: `--version`, one-line errors with the exit
codes docs/operations.md documents (never a traceback unless asked), `.env.example` in step
with the settings, and docker-compose publishing on loopback only. The CLI runs as a
subprocess against the test stack's moto server."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.local import processes
from shared.ops.failures import ExitCode
from shared.settings import ENV_PREFIX, Settings, settings_from_env
from tests.conftest import ROOT, Stack, run_triggers


def _triggers(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`triggers` with exactly ``env`` (plus PATH and coverage's variables, no AWS_* of ours)."""
    kept = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "AWS_CA_BUNDLE"} or k.startswith("COVERAGE")}
    return subprocess.run(
        [sys.executable, "-m", "shared.ops.cli", *args],
        env={**kept, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_one_line_error(result: subprocess.CompletedProcess[str], code: ExitCode, *words: str) -> None:
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    for word in words:
        assert word in lines[0], (word, lines[0])


def _closed_port_env(stack: Stack) -> dict[str, str]:
    """The stack's settings with AWS at a port nothing listens on, one attempt per call."""
    closed = f"http://127.0.0.1:{processes.free_port()}"
    # Empty per-service endpoints: both services use the one closed endpoint.
    only = {"TRIGGERS_SQS_ENDPOINT_URL": "", "TRIGGERS_DYNAMODB_ENDPOINT_URL": ""}
    return {**stack.env, **only, "TRIGGERS_AWS_ENDPOINT_URL": closed, "TRIGGERS_AWS_MAX_ATTEMPTS": "1"}


def test_version_is_the_distribution_version(stack: Stack) -> None:
    result = run_triggers(stack, "--version")
    assert result.stdout.strip() == f"triggers, version {importlib.metadata.version('triggers-api')}"


@pytest.mark.parametrize("command", [["stats"], ["keys", "list"], ["init"], ["dlq", "count"]])
def test_an_unreachable_endpoint_is_one_line_and_exit_3(stack: Stack, command: list[str]) -> None:
    env = _closed_port_env(stack)
    result = _triggers(env, *command)
    _assert_one_line_error(
        result, ExitCode.UNREACHABLE, "cannot reach the AWS endpoint", env["TRIGGERS_AWS_ENDPOINT_URL"]
    )


def test_debug_shows_the_traceback_the_one_line_hides(stack: Stack) -> None:
    env = _closed_port_env(stack)
    for shown in (_triggers(env, "--debug", "stats"), _triggers({**env, "TRIGGERS_DEBUG": "1"}, "stats")):
        assert shown.returncode == 1
        assert "Traceback" in shown.stderr
        assert "EndpointConnectionError" in shown.stderr


def test_missing_credentials_are_one_line_and_exit_4(tmp_path: Path) -> None:
    # Real AWS (no endpoint) and no credential anywhere the chain looks, instance metadata off.
    env = {
        "TRIGGERS_STATE_DIR": str(tmp_path),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    for command in (["stats"], ["keys", "list"]):
        _assert_one_line_error(_triggers(env, *command), ExitCode.CREDENTIALS, "no AWS credentials")


@pytest.mark.parametrize("command", [["stats"], ["keys", "list"], ["dlq", "peek"]])
def test_missing_queues_or_tables_say_run_init_and_exit_5(stack: Stack, command: list[str]) -> None:
    prefix = f"missing{uuid.uuid4().hex[:8]}"
    env = {**stack.env, "TRIGGERS_RESOURCE_PREFIX": prefix}
    result = _triggers(env, *command)
    _assert_one_line_error(result, ExitCode.NO_RESOURCES, "run `triggers init`", prefix)


def test_an_invalid_setting_is_one_line_and_exit_6(stack: Stack) -> None:
    result = _triggers({**stack.env, "TRIGGERS_INBOX_SHARDS": "0"}, "stats")
    _assert_one_line_error(result, ExitCode.CONFIGURATION, "invalid configuration", "inbox_shards")


def test_send_without_a_key_is_one_line_and_exit_4(stack: Stack) -> None:
    result = _triggers(stack.env, "send", "--type", "t", "--data", "{}")
    _assert_one_line_error(result, ExitCode.CREDENTIALS, "TRIGGERS_API_KEY")


def test_send_to_a_closed_port_is_one_line_and_exit_3(stack: Stack) -> None:
    url = f"http://127.0.0.1:{processes.free_port()}"
    result = _triggers(stack.env, "send", "--type", "t", "--data", "{}", "--key", "trg_x", "--ingest-url", url)
    _assert_one_line_error(result, ExitCode.UNREACHABLE, f"cannot reach {url}/events", "ConnectError")


def test_tail_to_a_closed_port_is_one_line_and_exit_3(stack: Stack) -> None:
    url = f"http://127.0.0.1:{processes.free_port()}"
    result = _triggers({**stack.env, "TRIGGERS_API_KEY": "trg_x"}, "tail", "--inbox-url", url)
    _assert_one_line_error(result, ExitCode.UNREACHABLE, f"cannot reach {url}/inbox")


# --- .env.example --------------------------------------------------------------------------


def test_the_committed_env_example_is_what_the_settings_generate(stack: Stack) -> None:
    generated = run_triggers(stack, "config", "--env-example").stdout
    committed = (ROOT / ".env.example").read_text()
    assert committed == generated, "regenerate: triggers config --env-example > .env.example"


def test_the_env_example_holds_every_setting_once_with_its_doc_and_real_default() -> None:
    text = (ROOT / ".env.example").read_text()
    assignments = re.findall(rf"^# ({ENV_PREFIX}[A-Z0-9_]+)=(.*)$", text, flags=re.MULTILINE)
    names = [name for name, _ in assignments]
    assert sorted(names) == sorted(ENV_PREFIX + field.upper() for field in Settings.__struct_fields__)
    assert len(set(names)) == len(names)
    # Uncommenting every line as it is changes nothing: each value reads back as its default.
    assert settings_from_env(dict(assignments)) == Settings()
    # Each variable sits under its one-line description.
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(rf"^# {ENV_PREFIX}[A-Z0-9_]+=", line):
            assert lines[index - 1].startswith("# "), line
            assert len(lines[index - 1]) > 4, line


# --- docker-compose -----------------------------------------------------------------------


def test_compose_publishes_every_port_on_loopback_only() -> None:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    published = [(name, port) for name, service in services.items() for port in service.get("ports", [])]
    assert {name for name, _ in published} >= {"localstack", "ingest", "inbox"}
    for name, port in published:
        assert isinstance(port, str), (name, port)  # the short syntax, whose host part we read
        assert port.startswith("127.0.0.1:"), (name, port)
        assert port.count(":") == 2, (name, port)  # host:published:container, all three given
