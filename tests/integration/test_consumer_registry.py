"""The consumer registry on storage (moto and DynamoDB Local): the per-account limit holds under
concurrent creates, a deletion frees the name and the slot at once, a re-created name is a new
generation, so a new partition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, cast

import msgspec
import pytest

from inbox_api.jobs import JobRunner
from shared.aws.clients import AwsClients, open_clients
from shared.aws.dynamodb import LeanDynamoDB
from shared.errors import ConsumerExists, ConsumerLimitReached, NotFound
from shared.keys.admin import new_account_id
from shared.storage import consumers
from shared.storage.consumers import Job, Status
from shared.storage.registry import ConsumerRegistry
from tests.conftest import Stack

LIMIT = 3


@pytest.fixture
async def clients(data_stack: Stack) -> AsyncIterator[AwsClients]:
    async with open_clients(data_stack.settings) as opened:
        yield opened


@pytest.fixture
def registry(data_stack: Stack, clients: AwsClients) -> ConsumerRegistry:
    settings = msgspec.structs.replace(data_stack.settings, consumers_per_account=LIMIT)
    return ConsumerRegistry(clients.dynamodb, settings)


async def _stored(data_stack: Stack, clients: AwsClients, account: str) -> list[dict[str, object]]:
    """Every item of the account in the consumers table, read consistently."""
    answer = await clients.dynamodb.query(**consumers.view_query(data_stack.settings.consumers_table, account))
    return [dict(item) for item in answer.get("Items", [])]


async def test_concurrent_creates_never_take_an_account_past_its_limit(
    data_stack: Stack, clients: AwsClients, registry: ConsumerRegistry
) -> None:
    account = new_account_id()

    outcomes = await asyncio.gather(
        *(registry.create(account, f"c{n}", None, 0) for n in range(4 * LIMIT)), return_exceptions=True
    )

    created = [o for o in outcomes if isinstance(o, consumers.Consumer)]
    refused = [o for o in outcomes if isinstance(o, ConsumerLimitReached)]
    # Conflicts past the retry policy answer TimeoutError (a 503): never a consumer too many.
    assert all(isinstance(o, consumers.Consumer | ConsumerLimitReached | TimeoutError) for o in outcomes), outcomes
    assert 1 <= len(created) <= LIMIT
    assert refused
    for n in range(4 * LIMIT, 4 * LIMIT + LIMIT - len(created)):  # what conflicts left free, taken one by one
        created.append(await registry.create(account, f"c{n}", None, 0))
    with pytest.raises(ConsumerLimitReached):
        await registry.create(account, "one-more", None, 0)
    listed = await registry.list(account)
    assert sorted(c.name for c in listed) == sorted(c.name for c in created)
    assert len(listed) == LIMIT
    assert consumers.account_count(await _stored(data_stack, clients, account)) == LIMIT


async def test_a_taken_name_is_refused_before_the_limit(registry: ConsumerRegistry) -> None:
    account = new_account_id()
    for n in range(LIMIT):
        await registry.create(account, f"c{n}", None, 0)

    with pytest.raises(ConsumerExists):
        await registry.create(account, "c0", ("a.*",), 0)
    assert (await registry.get(account, "c0")).event_types is None


async def test_delete_frees_the_name_and_the_slot_at_once_and_a_new_creation_is_a_new_generation(
    data_stack: Stack, clients: AwsClients, registry: ConsumerRegistry
) -> None:
    account = new_account_id()
    for n in range(LIMIT):
        await registry.create(account, f"c{n}", None, 0)
    old = await registry.get(account, "c1")

    await registry.delete(account, "c1")

    with pytest.raises(NotFound):
        await registry.get(account, "c1")
    with pytest.raises(NotFound):
        await registry.delete(account, "c1")
    again = await registry.create(account, "c1", ("order.*",), 0)  # the name and the slot, at once
    assert again.generation != old.generation
    assert again.partition != old.partition
    assert (await registry.get(account, "c1")) == again
    assert [c.name for c in await registry.list(account)] == ["c0", "c1", "c2"]
    stored = consumers.consumers_of(await _stored(data_stack, clients, account))
    [moved] = [c for c in stored if c.status is Status.DELETING]
    assert (moved.name, moved.generation, moved.job) == ("c1", old.generation, Job.CLEANUP)
    assert moved.job_due_us is not None
    assert moved.job_due_us > old.created_at_us
    assert consumers.account_count(await _stored(data_stack, clients, account)) == LIMIT


async def test_a_new_consumer_carries_its_backfill_and_its_filter_changes(
    data_stack: Stack, registry: ConsumerRegistry
) -> None:
    account, other = new_account_id(), new_account_id()
    made = await registry.create(account, "zap", ("order.*", "invoice.paid"), 1_700_000_000_000_000)
    settings = data_stack.settings
    delay_us = round((settings.consumer_view_s + settings.consumer_margin_s) * 1_000_000)

    assert made.job is Job.BACKFILL
    assert made.job_due_us == made.created_at_us + delay_us
    assert await registry.get(account, "zap") == made
    with pytest.raises(NotFound):
        await registry.get(other, "zap")
    changed = await registry.update(account, "zap", ("invoice.*",))
    assert changed == replace(made, event_types=("invoice.*",))
    assert (await registry.get(account, "zap")).event_types == ("invoice.*",)
    assert (await registry.update(account, "zap", None)).event_types is None
    with pytest.raises(NotFound):
        await registry.update(other, "zap", None)
    assert await registry.undelivered(made.partition) == 0


async def test_deleted_consumers_waiting_for_their_clean_up_bound_the_creations(
    data_stack: Stack, clients: AwsClients
) -> None:
    # Deleting frees a slot at once, but create-delete churn cannot pile up deleted items,
    # which every writer's view of the account reads: at LIMIT waiting, creation waits too.
    settings = msgspec.structs.replace(
        data_stack.settings, consumers_per_account=LIMIT, consumer_view_s=0.001, consumer_margin_s=0.0
    )
    registry = ConsumerRegistry(clients.dynamodb, settings)
    account = new_account_id()
    for n in range(LIMIT):
        await registry.create(account, f"churn{n}", None, 0)
        await registry.delete(account, f"churn{n}")
    with pytest.raises(ConsumerLimitReached):
        await registry.create(account, "one-more", None, 0)
    assert await registry.list(account) == []

    runner = JobRunner(clients.dynamodb, settings)
    deadline = time.monotonic() + 30
    while any(c.status is Status.DELETING for c in consumers.consumers_of(await _stored(data_stack, clients, account))):
        assert time.monotonic() < deadline, "the clean-ups did not end"
        await runner.run_due()

    await registry.create(account, "one-more", None, 0)
    assert [c.name for c in await registry.list(account)] == ["one-more"]


class _AnswerLost:
    """DynamoDB whose every transaction is sent twice, as the AWS client does when the answer
    to the first was lost on the way (a timeout, a reset): only the second answer is seen."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, **params: Any) -> Any:
        await self._client.transact_write_items(**params)
        return await self._client.transact_write_items(**params)


async def test_a_create_or_delete_whose_answer_was_lost_is_done_once_not_refused(dynamodb_local: Stack) -> None:
    # DynamoDB Local keeps ClientRequestToken's promise; moto (the fallback) ignores the token.
    settings = msgspec.structs.replace(dynamodb_local.settings, consumers_per_account=LIMIT)
    account = new_account_id()
    async with open_clients(settings) as opened:
        registry = ConsumerRegistry(cast(LeanDynamoDB, _AnswerLost(opened.dynamodb)), settings)

        made = await registry.create(account, "once", None, 0)
        assert [c.generation for c in await registry.list(account)] == [made.generation]
        await registry.delete(account, "once")
        assert await registry.list(account) == []
        items = await opened.dynamodb.query(**consumers.view_query(settings.consumers_table, account))
    assert consumers.account_count([dict(i) for i in items.get("Items", [])]) == 0
