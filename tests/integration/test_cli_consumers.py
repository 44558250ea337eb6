"""`triggers consumers` against the emulators, as an operator runs it (the real CLI process).

The commands act on storage through the ConsumerRegistry: what they create, list, show, change
and delete is what the registry reads back; counts come from the counters, backfill progress
from the consumer's item; refusals are one line with the documented exit code.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from shared.aws.clients import open_clients
from shared.keys.admin import new_account_id
from shared.storage import consumers
from shared.storage.consumers import Consumer
from shared.storage.counters import counter_add
from shared.storage.layout import counter_id
from shared.storage.registry import ConsumerRegistry
from tests.conftest import Stack, run_triggers

OWNER = "test-backfill"


def consumers_cli(stack: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`triggers consumers ...` against the test stack; no check: each test reads the exit code."""
    return subprocess.run(
        [sys.executable, "-m", "shared.ops.cli", "consumers", *args],
        env={**os.environ, **stack.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def as_json(stack: Stack, *args: str) -> Any:
    result = consumers_cli(stack, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def stored(stack: Stack, account: str, name: str) -> Consumer:
    """The consumer as the registry reads it (the inbox's view of storage)."""

    async def read() -> Consumer:
        async with open_clients(stack.settings) as clients:
            return await ConsumerRegistry(clients.dynamodb, stack.settings).get(account, name)

    return asyncio.run(read())


def add_undelivered(stack: Stack, partition: str, n: int) -> None:
    """Move a partition's undelivered count as the writer's transaction does (one counter shard)."""

    async def add() -> None:
        async with open_clients(stack.settings) as clients:
            await clients.dynamodb.update_item(
                **counter_add(stack.settings.counters_table, counter_id(partition), 0, n)
            )

    asyncio.run(add())


def walk_backfill(stack: Stack, consumer: Consumer, *, walked: int, copied: int, done: bool) -> None:
    """Advance the consumer's backfill as the job runner does: lease, save progress, maybe end."""
    table = stack.settings.consumers_table

    async def walk() -> None:
        async with open_clients(stack.settings) as clients:
            db, far = clients.dynamodb, 2**62
            await db.update_item(**consumers.job_lease(table, consumer, OWNER, 0, far))
            progress = consumers.job_progress(
                table, consumer, OWNER, after="0" * 26, walked=walked, delivered=copied, until_us=far
            )
            await db.update_item(**progress)
            if done:
                await db.update_item(**consumers.job_done(table, consumer, OWNER))

    asyncio.run(walk())


def test_a_consumer_from_creation_to_deletion(stack: Stack) -> None:
    account = new_account_id()
    made = as_json(stack, "create", "--account", account, "zap-1", "--event-type", "order.*", "--event-type",
                   "invoice.paid", "--event-type", "order.*", "--start", "2026-01-31T12:00:00+01:00")  # fmt: skip
    assert made["name"] == "zap-1"
    assert made["event_types"] == ["order.*", "invoice.paid"]  # duplicates dropped, order kept
    assert made["start"] == "2026-01-31T11:00:00.000000Z"
    assert made["total_undelivered"] == 0
    assert made["backfill"] == {"done": False, "events_walked": 0, "events_copied": 0}
    consumer = stored(stack, account, "zap-1")
    assert consumer.event_types == ("order.*", "invoice.paid")
    assert made["created_at"].endswith("Z")

    every = as_json(stack, "create", "--account", account, "all", "--start", "earliest")
    assert (every["event_types"], every["start"]) == (None, "earliest")
    listed = consumers_cli(stack, "list", "--account", account, "--json").stdout.splitlines()
    assert [json.loads(line)["name"] for line in listed] == ["default", "all", "zap-1"]

    updated = as_json(stack, "update", "--account", account, "zap-1", "--event-type", "refund.created")
    assert updated["event_types"] == ["refund.created"]
    assert stored(stack, account, "zap-1").event_types == ("refund.created",)
    widened = as_json(stack, "update", "--account", account, "zap-1", "--all-types")
    assert widened["event_types"] is None
    assert stored(stack, account, "zap-1").event_types is None

    deleted = consumers_cli(stack, "delete", "--account", account, "zap-1")
    assert (deleted.returncode, deleted.stdout.strip()) == (0, f"consumer zap-1 of account {account} deleted")
    gone = consumers_cli(stack, "show", "--account", account, "zap-1")
    assert (gone.returncode, gone.stderr.strip()) == (1, "Error: No such consumer.")
    again = as_json(stack, "create", "--account", account, "zap-1")  # the name is free at once
    assert stored(stack, account, "zap-1").generation != consumer.generation
    assert again["backfill"]["done"] is False


def test_show_counts_each_consumer_apart_and_reports_the_backfill(stack: Stack) -> None:
    account = new_account_id()
    as_json(stack, "create", "--account", account, "zap-1")
    consumer = stored(stack, account, "zap-1")
    add_undelivered(stack, consumer.partition, 3)
    add_undelivered(stack, account, 5)  # the default consumer: the account's own partition
    other = new_account_id()
    add_undelivered(stack, other, 11)  # another account's events are nobody's here

    assert as_json(stack, "show", "--account", account, "zap-1")["total_undelivered"] == 3
    default = as_json(stack, "show", "--account", account, "default")
    assert default == {
        "name": "default",
        "event_types": None,
        "start": "earliest",
        "created_at": None,
        "total_undelivered": 5,
        "backfill": None,
    }

    walk_backfill(stack, consumer, walked=120, copied=7, done=False)
    running = as_json(stack, "show", "--account", account, "zap-1")["backfill"]
    assert running == {"done": False, "events_walked": 120, "events_copied": 7}
    walk_backfill(stack, consumer, walked=30, copied=2, done=True)
    shown = consumers_cli(stack, "show", "--account", account, "zap-1").stdout
    assert "backfill           done: 150 events walked, 9 copied" in shown
    assert "total_undelivered  3" in shown
    listed = consumers_cli(stack, "list", "--account", account).stdout.splitlines()
    assert listed[0] == "default  5 undelivered  types *  from earliest"
    assert listed[1].startswith("zap-1  3 undelivered  types *  from ")
    assert listed[1].endswith("backfill done: 150 events walked, 9 copied")


def test_refusals_are_one_line_with_their_exit_code(stack: Stack) -> None:
    account = new_account_id()
    as_json(stack, "create", "--account", account, "zap-1")
    cases: list[tuple[list[str], int, str]] = [
        (["create", "--account", account, "zap-1"], 1, "already has a consumer of this name"),
        (["create", "--account", account, "default"], 2, "every account has `default` already"),
        (["create", "--account", account, "zap 1"], 2, "a consumer name is 1 to 64"),
        (["create", "--account", account, "x" * 65], 2, "a consumer name is 1 to 64"),
        (["create", "--account", "acme|eu", "zap-2"], 2, "account id"),
        (["create", "--account", account, "zap-2", "--event-type", ".*"], 2, "needs a prefix"),
        (["create", "--account", account, "zap-2", "--event-type", "t" * 256], 2, "1 to 255 characters"),
        (["create", "--account", account, "zap-2", "--start", "2026-01-31T12:00:00"], 2, "has no timezone"),
        (["create", "--account", account, "zap-2", "--start", "yesterday"], 2, "now, earliest, or an RFC 3339"),
        (["create", "--account", account, "zap-2", "--start", "1960-01-01T00:00:00Z"], 2, "is before 1970"),
        (["create", "--account", account, "zap-2", *[f"--event-type=t{n}" for n in range(51)]], 2, "at most 50"),
        (["update", "--account", account, "zap-1"], 2, "--event-type (repeat for several) or --all-types"),
        (["update", "--account", account, "zap-1", "--all-types", "--event-type", "a"], 2, "--all-types"),
        (["update", "--account", account, "default", "--all-types"], 1, "cannot be changed or deleted"),
        (["delete", "--account", account, "default"], 1, "cannot be changed or deleted"),
        (["delete", "--account", account, "nobody"], 1, "No such consumer."),
        (["update", "--account", account, "nobody", "--all-types"], 1, "No such consumer."),
        (["show", "--account", new_account_id(), "zap-1"], 1, "No such consumer."),  # another account's
        (["list"], 2, "Missing option '--account'"),
    ]
    for args, code, says in cases:
        result = consumers_cli(stack, *args)
        assert (result.returncode, says in result.stderr) == (code, True), (args, result.stderr)
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert [line for line in lines if line.startswith("Error: ")] == lines[-1:], result.stderr  # one, last
    assert [c.name for c in [stored(stack, account, "zap-1")]] == ["zap-1"]  # nothing refused changed it


def test_the_per_account_limit_is_refused_with_exit_1(stack: Stack) -> None:
    account, limit = new_account_id(), {"TRIGGERS_CONSUMERS_PER_ACCOUNT": "2"}
    for name in ("a", "b"):
        assert consumers_cli(stack, "create", "--account", account, name, env=limit).returncode == 0
    refused = consumers_cli(stack, "create", "--account", account, "c", env=limit)
    assert (refused.returncode, refused.stderr.strip()) == (
        1,
        "Error: The account has 2 consumers, as many as it may have,"
        " or 2 deleted ones whose clean-up has not ended (a minute or so).",
    )
    assert consumers_cli(stack, "delete", "--account", account, "a", env=limit).returncode == 0
    assert consumers_cli(stack, "create", "--account", account, "c", env=limit).returncode == 0  # the slot is free


def test_every_consumers_command_has_help(stack: Stack) -> None:
    for command in ([], ["create"], ["list"], ["show"], ["update"], ["delete"]):
        result = run_triggers(stack, "consumers", *command, "--help")
        assert result.stdout.startswith("Usage: "), command


def test_without_the_tables_it_says_run_init_and_exits_5(stack: Stack) -> None:
    result = consumers_cli(stack, "list", "--account", "acme", env={"TRIGGERS_RESOURCE_PREFIX": "nothere"})
    assert result.returncode == 5, result.stderr
    assert "run `triggers init`" in result.stderr
