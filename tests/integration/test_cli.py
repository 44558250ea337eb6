"""The operators' CLI against the moto server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from shared.settings import ENV_PREFIX, Settings
from tests.conftest import Stack, run_triggers


def test_init_is_idempotent(stack: Stack) -> None:
    first = run_triggers(stack, "init")
    second = run_triggers(stack, "init")
    assert first.returncode == 0
    assert second.returncode == 0
    assert "resources ready" in second.stdout
    assert "table created" not in second.stdout  # nothing left to create the second time


def test_every_command_has_help(stack: Stack) -> None:
    for command in (
        [],
        ["init"],
        ["up"],
        ["config"],
        ["run"],
        ["run", "ingest"],
        ["run", "inbox"],
        ["run", "writer"],
        ["keys"],
        ["keys", "create"],
        ["keys", "revoke"],
        ["migrate-counters"],
    ):
        result = run_triggers(stack, *command, "--help")
        assert result.stdout.startswith("Usage: "), command


def test_key_lifecycle_from_the_cli(stack: Stack) -> None:
    created = json.loads(run_triggers(stack, "keys", "create", "--scope", "inbox", "--name", "cli", "--json").stdout)
    assert created["key"].startswith("trg_")
    key_id = created["key_id"]

    shown = json.loads(run_triggers(stack, "keys", "show", key_id, "--json").stdout)
    assert shown["scopes"] == ["inbox"]
    assert shown["status"] == "active"
    assert "secret_hash" not in shown
    assert created["key"] not in run_triggers(stack, "keys", "list").stdout

    limited = json.loads(run_triggers(stack, "keys", "set-rate-limit", key_id, "120", "--json").stdout)
    assert limited["rate_limit_per_minute"] == 120
    rescoped = json.loads(
        run_triggers(stack, "keys", "set-scopes", key_id, "--scope", "ingest", "--scope", "inbox", "--json").stdout
    )
    assert rescoped["scopes"] == ["inbox", "ingest"]
    assert json.loads(run_triggers(stack, "keys", "deactivate", key_id, "--json").stdout)["status"] == "inactive"
    assert json.loads(run_triggers(stack, "keys", "activate", key_id, "--json").stdout)["status"] == "active"
    assert json.loads(run_triggers(stack, "keys", "revoke", key_id, "--json").stdout)["status"] == "revoked"

    # Revoked is final: it cannot be re-activated, and the CLI says so with a failing exit code.
    again = run_triggers(stack, "keys", "activate", key_id, check=False)
    assert again.returncode == 1
    assert "revoked" in again.stderr
    missing = run_triggers(stack, "keys", "show", "0000000000000000", check=False)
    assert missing.returncode == 1


def test_config_lists_every_setting_with_its_meaning(stack: Stack) -> None:
    listed = run_triggers(stack, "config").stdout
    for name in Settings.__struct_fields__:
        variable = ENV_PREFIX + name.upper()
        assert variable in listed, variable
    # Every setting says what it is for, on the indented line below its name.
    lines = listed.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith(ENV_PREFIX)]
    assert len(headers) == len(Settings.__struct_fields__)
    assert all(lines[i + 1].startswith("    ") and lines[i + 1].strip() for i in headers)


def test_bad_configuration_is_a_clear_error_not_a_traceback(stack: Stack) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shared.ops.cli", "init"],
        env={**os.environ, **stack.env, "TRIGGERS_WRITER_RECEIVERS": "many"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "invalid configuration" in result.stderr
    assert "writer_receivers" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_account_id_with_a_key_separator_is_refused(stack: Stack) -> None:
    result = run_triggers(stack, "keys", "create", "--account", "acme|eu", check=False)
    assert result.returncode == 2
    assert "account id" in result.stderr
    assert "Traceback" not in result.stderr
