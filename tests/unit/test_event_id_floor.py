"""``id_floor``: where a walk of an account's events by time of receipt starts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.contract import ids
from shared.contract.ids import id_floor, is_event_id, new_event_id

_MS = st.integers(min_value=1, max_value=2**48 - 2)


def _id_with_random_bits(ms: int, bits: int, monkeypatch: pytest.MonkeyPatch) -> str:
    with monkeypatch.context() as patch:
        patch.setattr(random, "getrandbits", lambda _: bits)
        return new_event_id(ms)


def test_the_floor_is_the_id_of_its_millisecond_with_no_random_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    ms = 1_700_000_000_123
    assert id_floor(ms) == _id_with_random_bits(ms, 0, monkeypatch)
    assert is_event_id(id_floor(ms))
    assert id_floor(0) == "0" * 26


@given(_MS)
def test_ids_of_that_millisecond_or_later_sort_at_or_after_it_earlier_ones_before(ms: int) -> None:
    top = (1 << ids._RANDOM_BITS) - 1
    last_of_previous = _encode(((ms - 1) << ids._RANDOM_BITS) | top)
    last_of_this = _encode((ms << ids._RANDOM_BITS) | top)
    assert last_of_previous < id_floor(ms) <= new_event_id(ms) <= last_of_this < id_floor(ms + 1)
    assert id_floor(ms) < new_event_id(ms + 1)


def _encode(value: int) -> str:
    """An id of any bits, spelled as ``new_event_id`` spells them."""
    return "".join(ids._CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))
