"""Event ids, request ids and the API key format."""

from __future__ import annotations

from typing import Any

import pytest

from shared.contract.ids import is_event_id, new_event_id, rfc3339, sanitize_request_id
from shared.keys.admin import check_account_id, new_account_id
from shared.keys.model import generate_key, parse_key
from shared.web.http import client_address


def test_event_ids_are_unique_url_safe_and_sort_by_time() -> None:
    ids = [new_event_id(now_ms=1_700_000_000_000 + i) for i in range(200)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(is_event_id(i) for i in ids)
    same_ms = {new_event_id(now_ms=1) for _ in range(1000)}
    assert len(same_ms) == 1000


def test_is_event_id_rejects_other_strings() -> None:
    assert not is_event_id("")
    assert not is_event_id("../etc/passwd")
    assert not is_event_id(new_event_id().lower())
    assert not is_event_id(new_event_id() + "0")


def test_request_ids_are_sanitised_bounded_or_generated() -> None:
    assert sanitize_request_id("req-1.2:3_x") == "req-1.2:3_x"
    assert sanitize_request_id("a\r\nSet-Cookie: x") == "aSet-Cookie:x"  # CR, LF and spaces go: no header injection
    assert len(sanitize_request_id("x" * 1000)) == 128
    generated = sanitize_request_id(None)
    assert generated != sanitize_request_id(None)
    assert sanitize_request_id("<>") != ""


def test_generated_keys_parse_back_to_their_parts() -> None:
    key, parts = generate_key()
    assert parse_key(key) == parts
    assert key.startswith("trg_")


def test_malformed_keys_do_not_parse() -> None:
    key, _ = generate_key()
    assert parse_key(key[:-1]) is None
    assert parse_key("xyz" + key[3:]) is None
    assert parse_key(key.replace("_", "-", 2)) is None
    assert parse_key("trg_" + "G" * 16 + "_" + "a" * 43) is None  # key id must be hex
    assert parse_key("") is None


def test_rfc3339_is_utc_with_microseconds() -> None:
    assert rfc3339(1_764_391_919_377_757) == "2025-11-29T04:51:59.377757Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"
    assert rfc3339(1_000_001) == "1970-01-01T00:00:01.000001Z"


def test_the_client_is_the_peer_unless_proxies_are_trusted() -> None:
    scope: Any = {"client": ("10.1.1.1", 5000), "headers": [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.7")]}
    assert client_address(scope, 0) == "10.1.1.1"
    assert client_address(scope, 1) == "203.0.113.7"  # the address the one trusted proxy saw
    assert client_address(scope, 2) == "6.6.6.6"
    nobody: Any = {"client": None, "headers": []}
    assert client_address(nobody, 1) == ""


def test_account_ids_cannot_hold_the_separators_of_storage_keys() -> None:
    for good in ("acc_0123abcd", "tenant-42", "A" * 64):
        assert check_account_id(good) == good
    for bad in ("a|b", "a#1", "", "A" * 65, "a b", "é"):
        with pytest.raises(ValueError, match="account id"):
            check_account_id(bad)
    assert check_account_id(new_account_id())
