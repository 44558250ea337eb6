"""DLQ replay reads a message's events and claims with a few BatchGetItem calls (against moto).

A dead letter can hold hundreds of events of many accounts. Replay asks which are stored,
and for those past retention whether their dedup key was claimed, in batches of 100 keys
(never one GetItem per event), and decides each event as before: stored ones stay out of
the replayed message, young and never-claimed old ones go back, claimed old ones are set
apart; an event repeated in the message, or with a key DynamoDB refuses, costs no one else.
"""

from __future__ import annotations

import asyncio
import time

from shared.aws.clients import AWS_REQUESTS, open_clients
from shared.contract.envelope import QueuedEvent, decode_message, encode_message
from shared.keys.admin import new_account_id
from shared.ops.dlq import DeadLetterQueue, ReplayFilter
from tests.conftest import Stack, private_stack
from tests.integration.test_dlq_cli import NONE, dead_letter, event, expire, queued_bodies, store


def _replay(stack: Stack) -> tuple[dict[str, int], dict[str, int]]:
    """Replay in this process: the outcome counts, and the DynamoDB requests it made."""

    async def run() -> dict[str, int]:
        async with open_clients(stack.settings) as clients:
            report = await DeadLetterQueue(clients, stack.settings).replay(ReplayFilter(), limit=10, dry_run=False)
            return report.counts()

    before = dict(AWS_REQUESTS)
    counts = asyncio.run(run())
    made = {k: n - before.get(k, 0) for k, n in AWS_REQUESTS.items() if k.startswith("dynamodb.")}
    return counts, {k: n for k, n in made.items() if n}


def _replayed(stack: Stack) -> list[str]:
    return [
        e.event_id for body, _ in queued_bodies(stack, stack.settings.events_queue) for e in decode_message(body).events
    ]


def test_a_large_dead_letter_is_planned_with_batch_reads_and_each_event_decided(stack: Stack) -> None:
    own = private_stack(stack)
    accounts = [new_account_id() for _ in range(3)]
    past_us = time.time_ns() // 1000 - (own.settings.event_retention_s + 3600) * 1_000_000
    young = [event(accounts[n % 3], "t", n) for n in range(210)]
    stored = young[::3]
    old_claimed = [event(accounts[n % 3], "old", 1000 + n, at_us=past_us) for n in range(5)]
    old_unclaimed = [event(accounts[n % 3], "old", 2000 + n, at_us=past_us) for n in range(5)]
    store(own, [*stored, *old_claimed])
    expire(own, old_claimed)  # stored, acknowledged and expired: only their claims are left
    message: list[QueuedEvent] = [*young, young[1], *old_claimed, *old_unclaimed]  # young[1] twice
    dead_letter(own, encode_message(message))

    counts, requests = _replay(own)

    assert counts == {**NONE, "replayed": 1}
    stored_ids = {e.event_id for e in [*stored, *old_claimed]}
    assert _replayed(own) == [e.event_id for e in message if e.event_id not in stored_ids]
    left = queued_bodies(own, own.settings.dead_letter_queue)
    assert [e.event_id for body, _ in left for e in decode_message(body).events] == [e.event_id for e in old_claimed]
    # 225 distinct events: 3 batches of keys for the events, 1 for the claims of the 10 old ones.
    assert requests == {"dynamodb.BatchGetItem": 4}


def test_an_event_whose_key_dynamodb_refuses_costs_the_others_nothing(data_stack: Stack) -> None:
    own = private_stack(data_stack)  # DynamoDB Local refuses an empty key, as DynamoDB does; moto does not
    account = new_account_id()
    stored, fresh = event(account, "t", 1), event(account, "t", 2)
    nameless = event("", "t", 3)  # an empty account id: DynamoDB refuses the key
    store(own, [stored])
    dead_letter(own, encode_message([stored, nameless, fresh]))

    counts, _ = _replay(own)

    assert counts == {**NONE, "replayed": 1}
    assert _replayed(own) == [nameless.event_id, fresh.event_id]  # never stored, so sent back
    assert queued_bodies(own, own.settings.dead_letter_queue) == []
