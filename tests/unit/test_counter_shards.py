"""Counter writes stay on one shard until they contend (shared.storage.counters)."""

from __future__ import annotations

from shared.storage import counters
from shared.storage.counters import ShardChooser
from shared.storage.transactions import Cancellation, Role, TxItem
from tests.helpers import ManualClock


def test_an_account_whose_writes_never_conflict_stays_on_shard_zero() -> None:
    chooser = ShardChooser(8, ManualClock(1000.0))
    assert {chooser.shard(["a"]) for _ in range(200)} == {0}


def test_a_contended_account_spreads_over_every_shard_then_returns_to_one() -> None:
    clock = ManualClock(1000.0)
    chooser = ShardChooser(8, clock)
    chooser.contended(["hot"])
    assert {chooser.shard(["hot"]) for _ in range(500)} == set(range(8))
    assert {chooser.shard(["quiet"]) for _ in range(200)} == {0}
    clock.now += counters.CONTENDED_FOR_S + 1
    assert {chooser.shard(["hot"]) for _ in range(200)} == {0}


def test_a_transaction_spreads_if_any_of_its_accounts_is_contended() -> None:
    chooser = ShardChooser(4, ManualClock(1000.0))
    chooser.contended(["hot"])
    assert {chooser.shard(["quiet", "hot"]) for _ in range(300)} == set(range(4))


def test_the_memory_of_contended_accounts_is_bounded_and_forgets_the_oldest() -> None:
    chooser = ShardChooser(8, ManualClock(1000.0))
    chooser.contended(["first"])
    chooser.contended(f"a{n}" for n in range(counters.CONTENDED_REMEMBERED))
    assert {chooser.shard(["first"]) for _ in range(100)} == {0}
    assert len({chooser.shard(["a0"]) for _ in range(300)}) > 1


def test_only_a_conflict_with_another_transaction_spreads_an_account() -> None:
    chooser = ShardChooser(8, ManualClock(1000.0))
    put, counter = TxItem(Role.EVENT_PUT, {}, None), TxItem(Role.COUNTER, {}, None)
    chooser.cancelled([Cancellation(put, "ConditionalCheckFailed"), Cancellation(counter, "None")], ["duplicate"])
    chooser.cancelled([Cancellation(put, "None"), Cancellation(counter, "TransactionConflict")], ["busy"])
    assert {chooser.shard(["duplicate"]) for _ in range(200)} == {0}
    assert len({chooser.shard(["busy"]) for _ in range(300)}) > 1
