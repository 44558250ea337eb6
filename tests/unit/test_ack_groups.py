"""Acknowledgements are split into transactions that fit DynamoDB's 100 items."""

from __future__ import annotations

from inbox_api.acks import _groups, _Mark, _State
from shared.storage.attributes import StringValue
from shared.storage.events import AckItem
from shared.storage.layout import TRANSACTION_MAX_ITEMS


def _item(n: int, event_type: str) -> _Mark:
    return _Mark(AckItem(event_id=StringValue(f"{n:026d}"), event_type=StringValue(event_type)), _State.AVAILABLE, None)


def test_every_event_lands_in_exactly_one_group_that_fits_a_transaction() -> None:
    for count, types in ((1, 1), (98, 1), (99, 1), (250, 1), (250, 30), (400, 120)):
        events = [_item(n, f"type.{n % types}") for n in range(count)]
        groups = _groups(events)
        assert sorted(e.id for g in groups for e in g) == sorted(e.id for e in events)
        for group in groups:
            counters = 1 + len({e.item.type for e in group})  # the total, and one per type
            assert len(group) + counters <= TRANSACTION_MAX_ITEMS


def test_one_type_fills_a_transaction_to_the_last_item() -> None:
    groups = _groups([_item(n, "only") for n in range(300)])
    assert [len(g) for g in groups] == [98, 98, 98, 6]


def test_nothing_to_acknowledge_makes_no_group() -> None:
    assert _groups([]) == []
