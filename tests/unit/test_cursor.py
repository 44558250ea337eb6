"""Cursors are opaque and tamper-evident, and bound to one account, filter and order."""

from __future__ import annotations

import pytest

from inbox_api.cursor import CursorCodec, CursorState
from shared.errors import InvalidCursor
from shared.storage.layout import inbox_position

QUERY = CursorState("acc_1", None, "asc", "")
STATE = CursorState("acc_1", None, "asc", inbox_position(1_764_391_919_377_757, "01ARZ3NDEKTSV4RRFFQ69G5FAV"))


def test_a_cursor_round_trips() -> None:
    codec = CursorCodec("secret")
    assert codec.decode(codec.encode(STATE), QUERY) == STATE.after


@pytest.mark.parametrize(
    "other",
    [
        CursorState("acc_2", None, "asc", ""),
        CursorState("acc_1", "order.created", "asc", ""),
        CursorState("acc_1", None, "desc", ""),
    ],
    ids=["other-account", "other-filter", "other-order"],
)
def test_a_cursor_is_refused_for_another_query(other: CursorState) -> None:
    codec = CursorCodec("secret")
    with pytest.raises(InvalidCursor):
        codec.decode(codec.encode(STATE), other)


def test_altered_truncated_or_foreign_cursors_are_refused() -> None:
    codec = CursorCodec("secret")
    token = codec.encode(STATE)
    data, mac = token.split(".")
    flipped = data[:-2] + ("A" if data[-2] != "A" else "B") + data[-1]
    candidates = [
        f"{flipped}.{mac}",
        token[:-3],
        data,
        "",
        "..",
        "%%%.%%%",
        CursorCodec("other secret").encode(STATE),
        "x" * 5000,
    ]
    for candidate in candidates:
        with pytest.raises(InvalidCursor):
            codec.decode(candidate, QUERY)


@pytest.mark.parametrize("after", ["", "0" * 16, "x" * 42, "0" * 16 + "01ARZ3NDEKTSV4RRFFQ69G5FAV\n"])
def test_a_genuine_cursor_whose_position_we_never_hand_out_is_refused(after: str) -> None:
    """Signed with our secret (a leaked or reused one), yet no position: a 400, never a Query
    DynamoDB refuses (a 500)."""
    codec = CursorCodec("secret")
    with pytest.raises(InvalidCursor):
        codec.decode(codec.encode(CursorState("acc_1", None, "asc", after)), QUERY)
