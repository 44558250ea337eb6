"""Named consumers followed to their end state while events flow, against real processes.

An ingest edge, two writers and inbox processes of a stack of their own, with a short
writers' view (TRIGGERS_CONSUMER_VIEW_S 0.5), margin (TRIGGERS_CONSUMER_MARGIN_S 1) and job
poll (TRIGGERS_JOB_POLL_S 0.2), so a new consumer's backfill, or a deleted one's clean-up,
comes due 1.5 s after the change and races the writers' copies:

- consumers created while a producer streams: one from ``now`` holds exactly the events
  received from its start on, one from ``earliest`` every event of the account; each once,
  with exact counts, though the backfill and the writers copy the same events meanwhile;
- an inbox process SIGKILLed in the middle of a large, slow backfill: another inbox process
  takes the job once the lease has expired and finishes it, every event copied once;
- a consumer deleted during a stream: its copies and counters are gone after the clean-up,
  the name re-created starts empty, and the other consumer and the default inbox lose nothing.

Every input goes in over HTTP and every end state is read over HTTP, but for what a deleted
consumer leaves in storage, which no route shows any more: that is read from the tables.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from inbox_api.jobs import LEASE_S
from shared.aws.clients import open_clients
from shared.local import processes
from shared.storage import consumers, events
from shared.storage.counters import shard_keys_query
from shared.storage.layout import counter_id
from tests.conftest import ApiKey, Service, Stack, make_key, private_stack, queue_counts, start_service, wait_until
from tests.faults import Producer, acknowledge, consumer_of, create_consumer, read_events

TIMING = {"consumer_view_s": "0.5", "consumer_margin_s": "1", "job_poll_s": "0.2"}
# Settings of the writers alone and of the inbox processes alone, on top of the stack's (none
# here). What the tests stand on shows by changing them: a writers' view of 10 s (their
# copies miss what the backfill, due at 1.5 s, has already walked past), a job poll of 3600 s
# on the inboxes (no backfill, no clean-up).
WRITER_ENV: dict[str, str] = {}
INBOX_ENV: dict[str, str] = {}
STREAM_PER_S = 100  # events a second of each producer (a tenth of them also sent twice)
# View + margin + a poll: by then a job due after a change has started.
JOB_DUE_S = sum(float(TIMING[name]) for name in ("consumer_view_s", "consumer_margin_s", "job_poll_s"))


@dataclass
class Rig:
    stack: Stack
    ingest: Service
    writers: list[Service]
    inbox: Service


@pytest.fixture(scope="module")
def rig(stack: Stack) -> Iterator[Rig]:
    own = private_stack(stack, **TIMING)
    services: list[Service] = []
    try:
        services.append(ingest := start_service(own, "ingest"))
        writers = [start_service(own, "writer", WRITER_ENV) for _ in range(2)]
        services += writers
        services.append(inbox := start_service(own, "inbox", INBOX_ENV))
        yield Rig(own, ingest, writers, inbox)
    finally:
        processes.stop([s.process for s in services])


# --- Reading what the inbox holds ---------------------------------------------------------------


def _undelivered(client: httpx.Client, inbox: Service, key: ApiKey, consumer: str | None = None) -> dict[str, Any]:
    """Every undelivered event, by id, of the account's inbox or of ``consumer``; checked
    exactly once each and counted exactly."""
    found, total = read_events(client, inbox.url, key.key, consumer=consumer)
    ids = [e["event_id"] for e in found]
    assert [i for i, n in Counter(ids).items() if n > 1] == [], consumer
    seqs = [e["payload"]["seq"] for e in found]
    assert [s for s, n in Counter(seqs).items() if n > 1] == [], consumer  # no event stored twice
    assert total == len(found), (consumer, total, len(found))
    if consumer is not None:
        assert consumer_of(client, inbox.url, key.key, consumer)["total_undelivered"] == total
    return {e["event_id"]: e for e in found}


def _holds(client: httpx.Client, inbox: Service, key: ApiKey, consumer: str | None, ids: set[str]) -> bool:
    return {e["event_id"] for e in read_events(client, inbox.url, key.key, consumer=consumer)[0]} >= ids


def _backfill(client: httpx.Client, inbox: Service, key: ApiKey, name: str) -> dict[str, Any]:
    backfill: dict[str, Any] = consumer_of(client, inbox.url, key.key, name)["backfill"]
    return backfill


def _stored_all(client: httpx.Client, rig: Rig, key: ApiKey, producer: Producer) -> dict[str, Any]:
    """Once the pipeline has settled: the account's inbox, holding every accepted event once."""
    accepted = set(producer.report.accepted)

    def seqs() -> set[int]:
        return {e["payload"]["seq"] for e in read_events(client, rig.inbox.url, key.key)[0]}

    assert wait_until(lambda: seqs() >= accepted, 60)
    assert wait_until(lambda: queue_counts(rig.stack, rig.stack.settings.events_queue) == (0, 0), 60)
    stored = _undelivered(client, rig.inbox, key)
    assert {e["payload"]["seq"] for e in stored.values()} == accepted
    return stored


# --- Created while a producer streams -----------------------------------------------------------

BEFORE_S = 1.5  # the stream runs this long before the consumers exist
AFTER_S = 1.5  # and this long past their backfills: the writers' copies alone


def test_consumers_created_during_a_stream_get_exactly_theirs_once(rig: Rig) -> None:
    key = make_key(rig.stack)
    producer = Producer([rig.ingest.url], key.key, "created-during", STREAM_PER_S)
    with httpx.Client(timeout=30) as client, producer:
        time.sleep(BEFORE_S)
        late, every = _create_together(rig.inbox, key, [("late", "now"), ("every", "earliest")])
        assert wait_until(lambda: all(_backfill(client, rig.inbox, key, n)["done"] for n in ("late", "every")), 20)
        time.sleep(AFTER_S)
    producer.finish()

    with httpx.Client(timeout=30) as client:
        stored = _stored_all(client, rig, key, producer)
        # RFC 3339 of fixed width (microseconds, Z): the strings order as the times do.
        later = {i for i, e in stored.items() if e["received_at"] >= late["start"]}
        assert 0 < len(later) < len(stored)  # the stream did cross the creation
        assert wait_until(lambda: _holds(client, rig.inbox, key, "every", set(stored)))
        assert wait_until(lambda: _holds(client, rig.inbox, key, "late", later))
        assert set(_undelivered(client, rig.inbox, key, "every")) == set(stored)
        assert set(_undelivered(client, rig.inbox, key, "late")) == later  # none received before its start
        backfill = _backfill(client, rig.inbox, key, "every")
    assert every["start"] == "earliest"
    # The backfill copied what came before the consumer; the writers alone what came after it
    # had walked past (and both raced on what the writers stored meanwhile).
    assert len(stored) - len(later) <= backfill["events_copied"] < len(stored)
    assert backfill["events_walked"] == backfill["events_copied"]


def _create_together(inbox: Service, key: ApiKey, names_and_starts: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Create the consumers at the same moment, each on a connection of its own."""

    def create(name: str, start: str) -> dict[str, Any]:
        with httpx.Client(timeout=30) as client:
            return create_consumer(client, inbox.url, key.key, name, start=start)

    with ThreadPoolExecutor(len(names_and_starts)) as pool:
        futures = [pool.submit(create, name, start) for name, start in names_and_starts]
        return [f.result() for f in futures]


# --- An inbox process killed in the middle of a backfill ----------------------------------------

BULK_EVENTS = 3000
BACKFILL_PER_S = 300  # about 10 s of backfill for one process
BATCH = 500  # POST /events/batch takes this many at most


def test_a_backfill_whose_inbox_is_killed_is_finished_by_another_after_the_lease(stack: Stack) -> None:
    own = private_stack(stack, **TIMING)
    slow = {**INBOX_ENV, "TRIGGERS_BACKFILL_EVENTS_PER_S": str(BACKFILL_PER_S)}
    services: list[Service] = []
    try:
        services += [start_service(own, "ingest"), *(start_service(own, "writer", WRITER_ENV) for _ in range(2))]
        inboxes = [start_service(own, "inbox", slow) for _ in range(2)]
        services += inboxes
        key = make_key(own)
        with httpx.Client(timeout=30) as client:
            sent = _send_bulk(client, services[0], key, BULK_EVENTS)
            assert wait_until(lambda: _total(client, inboxes[0], key) == BULK_EVENTS, 60)
            # Every event is stored before the consumer exists: the backfill alone copies them.
            create_consumer(client, inboxes[0].url, key.key, "late", start="earliest")
            assert wait_until(lambda: _backfill(client, inboxes[0], key, "late")["events_walked"] > 0, 15)
            [running] = [i for i in inboxes if _ran_a_step(own, i, key)]
            [other] = [i for i in inboxes if i is not running]
            running.process.send_signal(signal.SIGKILL)
            running.process.wait(10)
            killed_at = time.monotonic()
            at_kill = _backfill(client, other, key, "late")  # the place the killed process saved last
            assert not at_kill["done"], at_kill
            assert 0 < at_kill["events_walked"] < BULK_EVENTS, at_kill

            moved = wait_until(lambda: _backfill(client, other, key, "late") != at_kill, LEASE_S + 20, 0.5)
            resumed_after_s = time.monotonic() - killed_at
            assert moved, at_kill
            # Nobody takes a lease before it expires: the killed process renewed it at its last step.
            assert resumed_after_s > LEASE_S - 3, resumed_after_s
            assert wait_until(lambda: _backfill(client, other, key, "late")["done"], 30)

            assert set(_undelivered(client, other, key, "late")) == sent  # each event copied once
            # Each step counted once, the killed process's unsaved one included.
            assert _backfill(client, other, key, "late") == {
                "done": True,
                "events_walked": BULK_EVENTS,
                "events_copied": BULK_EVENTS,
            }
            assert _total(client, other, key) == BULK_EVENTS  # the account's own inbox untouched
    finally:
        processes.stop([s.process for s in services])


def _ran_a_step(stack: Stack, inbox: Service, key: ApiKey) -> bool:
    """Has this inbox process run a step of the account's job? Its log says (start_service's file)."""
    log = stack.logs / f"inbox-{inbox.url.rsplit(':', 1)[1]}.log"
    for line in log.read_text(errors="replace").splitlines():
        if '"consumer_job_step"' in line and key.account_id in line:
            return True
    return False


def _send_bulk(client: httpx.Client, ingest: Service, key: ApiKey, n: int) -> set[str]:
    """``n`` events through POST /events/batch; their ids."""
    ids: set[str] = set()
    for start in range(0, n, BATCH):
        batch = [{"event_type": "bulk.event", "payload": {"seq": i}} for i in range(start, min(n, start + BATCH))]
        answer = client.post(f"{ingest.url}/events/batch", json={"events": batch}, headers=key.headers)
        assert answer.status_code == 202, answer.text
        ids |= {r["event_id"] for r in answer.json()["results"]}
    assert len(ids) == n
    return ids


def _total(client: httpx.Client, inbox: Service, key: ApiKey) -> int:
    page = client.get(f"{inbox.url}/inbox", params={"limit": 1}, headers=key.headers)
    assert page.status_code == 200, page.text
    total: int = page.json()["total_undelivered"]
    return total


# --- Deleted during a stream --------------------------------------------------------------------


def test_a_consumer_deleted_during_a_stream_leaves_nothing_and_takes_nothing_from_the_others(rig: Rig) -> None:
    key = make_key(rig.stack)
    producer = Producer([rig.ingest.url], key.key, "deleted-during", STREAM_PER_S)
    with httpx.Client(timeout=30) as client:
        for name in ("gone", "kept"):
            create_consumer(client, rig.inbox.url, key.key, name)
        with producer:
            assert wait_until(lambda: consumer_of(client, rig.inbox.url, key.key, "gone")["total_undelivered"] >= 50)
            # Some of its copies acknowledged (they expire later): the clean-up deletes those too.
            some = list(read_events(client, rig.inbox.url, key.key, consumer="gone")[0])[:10]
            acknowledge(client, rig.inbox.url, key.key, [e["event_id"] for e in some], "gone")
            partition = _partition_of(rig.stack, key.account_id, "gone")
            assert _copies_in(rig.stack, partition) > 0
            deleted = client.delete(f"{rig.inbox.url}/consumers/gone", headers=key.headers)
            assert deleted.status_code == 204, deleted.text
            assert client.get(f"{rig.inbox.url}/consumers/gone", headers=key.headers).status_code == 404
            # On past the clean-up's due time: writers whose views still hold it copy into it meanwhile.
            time.sleep(JOB_DUE_S + 1)

        producer.finish()
        stored = _stored_all(client, rig, key, producer)
        assert wait_until(lambda: _moved_item_gone(rig.stack, key.account_id), 20)  # the clean-up is done
        assert _copies_in(rig.stack, partition) == 0
        assert _counter_shards(rig.stack, partition, producer.event_type) == 0

        assert set(_undelivered(client, rig.inbox, key, "kept")) == set(stored)  # lost nothing
        assert [c["name"] for c in _listed(client, rig.inbox, key)] == ["default", "kept"]
        again = create_consumer(client, rig.inbox.url, key.key, "gone", start="earliest")
        assert again["total_undelivered"] == 0
        assert wait_until(lambda: _backfill(client, rig.inbox, key, "gone")["done"], 15)
        # The name re-created is a new consumer: from the earliest event, every one, once each.
        assert set(_undelivered(client, rig.inbox, key, "gone")) == set(stored)
        assert set(_undelivered(client, rig.inbox, key)) == set(stored)  # the account's own: as it was


def _listed(client: httpx.Client, inbox: Service, key: ApiKey) -> list[dict[str, Any]]:
    answer = client.get(f"{inbox.url}/consumers", headers=key.headers)
    assert answer.status_code == 200, answer.text
    listed: list[dict[str, Any]] = answer.json()["consumers"]
    return listed


# --- What a deleted consumer leaves in storage (no route shows it) ------------------------------


def _account_items(stack: Stack, account_id: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        async with open_clients(stack.settings) as clients:
            answer = await clients.dynamodb.query(**consumers.view_query(stack.settings.consumers_table, account_id))
        return [dict(item) for item in answer.get("Items", [])]

    return asyncio.run(read())


def _partition_of(stack: Stack, account_id: str, name: str) -> str:
    [found] = [c for c in consumers.consumers_of(_account_items(stack, account_id)) if c.name == name]
    return found.partition


def _moved_item_gone(stack: Stack, account_id: str) -> bool:
    """No deleted consumer's item is left: the last step of its clean-up."""
    return all(c.status is consumers.Status.ACTIVE for c in consumers.consumers_of(_account_items(stack, account_id)))


def _copies_in(stack: Stack, partition: str) -> int:
    async def count() -> int:
        async with open_clients(stack.settings) as clients:
            query = events.copy_keys_query(stack.settings.events_table, partition, 1000)
            answer = await clients.dynamodb.query(**query)
        return len(answer.get("Items", []))

    return asyncio.run(count())


def _counter_shards(stack: Stack, partition: str, event_type: str) -> int:
    """Shard items left of the partition's counter and of its type's."""

    async def count() -> int:
        async with open_clients(stack.settings) as clients:
            found = 0
            for counter in (counter_id(partition), counter_id(partition, event_type)):
                answer = await clients.dynamodb.query(**shard_keys_query(stack.settings.counters_table, counter))
                found += len(answer.get("Items", []))
        return found

    return asyncio.run(count())
