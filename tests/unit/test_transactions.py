"""Cancellation reasons are named once, by item: an answer that does not say which item failed
leaves every item to be tried again, never without a verdict (pure logic, small fakes)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from shared.settings import settings_from_env
from shared.storage.transactions import UNKNOWN, Role, TransactionCancelled, TxItem, transact
from tests.helpers import queued_event
from writer_worker.store import EventWriter, Outcome


def _cancelled(reasons: list[dict[str, Any]]) -> ClientError:
    response: Any = {"Error": {"Code": "TransactionCanceledException", "Message": "x"}, "CancellationReasons": reasons}
    return ClientError(response, "TransactWriteItems")


class _Refusing:
    def __init__(self, reasons: list[dict[str, Any]]) -> None:
        self.reasons = reasons

    async def transact_write_items(self, **_: Any) -> dict[str, Any]:
        raise _cancelled(self.reasons)


def _items(n: int) -> list[TxItem[int]]:
    return [TxItem(Role.COUNTER, {"Update": {}}, i, f"acct{i}") for i in range(n)]


async def test_reasons_are_named_by_the_item_they_concern() -> None:
    client = _Refusing([{"Code": "None"}, {"Code": "ConditionalCheckFailed", "Item": {"n": {"N": "1"}}}])
    with pytest.raises(TransactionCancelled) as caught:
        await transact(client, _items(2))
    first, second = caught.value.cancellations
    assert (first.item.ref, first.code, first.condition_failed) == (0, "None", False)
    assert (second.item.ref, second.code, second.old) == (1, "ConditionalCheckFailed", {"n": {"N": "1"}})


@pytest.mark.parametrize("given", [0, 1, 3])
async def test_an_answer_with_another_number_of_reasons_names_no_item(given: int) -> None:
    client = _Refusing([{"Code": "ConditionalCheckFailed"}] * given)
    with pytest.raises(TransactionCancelled) as caught:
        await transact(client, _items(2))
    assert [(c.item.ref, c.code) for c in caught.value.cancellations] == [(0, UNKNOWN), (1, UNKNOWN)]
    assert not any(c.condition_failed for c in caught.value.cancellations)


class _ShortAliasAnswer:
    """Every event's claim is taken by another event, and the first alias transaction is
    answered with one reason for all its items; later ones succeed."""

    def __init__(self, original_id: str) -> None:
        self.original_id = original_id
        self.alias_calls = 0

    async def transact_write_items(self, TransactItems: list[dict[str, Any]]) -> dict[str, Any]:
        if "alias_of" in str(TransactItems[0]):
            self.alias_calls += 1
            if self.alias_calls == 1:
                raise _cancelled([{"Code": "None"}])
            return {}
        taken = {"Code": "ConditionalCheckFailed", "Item": {"event_id": {"S": self.original_id}}}
        raise _cancelled([taken if "dedup_id" in str(i) else {"Code": "None"} for i in TransactItems])


async def test_a_short_answer_for_aliases_leaves_each_duplicate_to_be_written_again() -> None:
    original = queued_event("acct", "t", {"n": 0})
    client = _ShortAliasAnswer(original.event_id)
    writer = EventWriter(client, settings_from_env({"TRIGGERS_RESOURCE_PREFIX": "unit"}))  # type: ignore[arg-type]
    events = [queued_event("acct", "t", {"n": n}, idempotency_key=f"k{n}") for n in range(3)]

    results = await writer.write(events)

    assert client.alias_calls == 2
    assert {e.event_id: (results[e.event_id].outcome, results[e.event_id].original_id) for e in events} == {
        e.event_id: (Outcome.DUPLICATE, original.event_id) for e in events
    }
