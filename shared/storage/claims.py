"""The dedup claim item: which event first claimed a dedup key, and until when.

``dedup_id`` (the key, ``shared.storage.layout.dedup_id``), ``event_id`` (the claimant),
``window_ends_us`` (a copy received before it is a duplicate), ``expires_at`` (TTL: it only
tidies up; the claim's condition, not TTL, decides duplicates). The writer builds claims
here, and DLQ replay reads them here; nothing else spells these attributes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.contract.envelope import QueuedEvent
from shared.storage.attributes import StringValue
from shared.storage.reads import BatchGetAnswer

_US = 1_000_000


def claim_key(claim_id: str) -> dict[str, dict[str, str]]:
    return {"dedup_id": {"S": claim_id}}


def claim_item(claim_id: str, event: QueuedEvent, window_us: int, linger_s: int) -> dict[str, Any]:
    """The claim of ``event`` on its key, for ``window_us`` after its receipt.

    It outlives its window by ``linger_s`` (``layout.claim_linger_s``): as long as a copy
    received inside the window can still arrive, and meet it.
    """
    window_ends_us = event.received_at_us + window_us
    return {
        **claim_key(claim_id),
        "event_id": {"S": event.event_id},
        "window_ends_us": {"N": str(window_ends_us)},
        "expires_at": {"N": str(window_ends_us // _US + linger_s)},
    }


def claim_put(table: str, item: dict[str, Any], received_at_us: int) -> dict[str, Any]:
    """Claim the key unless another event holds it within its window; the holder comes back."""
    return {
        "TableName": table,
        "Item": item,
        "ConditionExpression": "attribute_not_exists(dedup_id) OR window_ends_us <= :received",
        "ExpressionAttributeValues": {":received": {"N": str(received_at_us)}},
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def claim_probe(table: str, item: dict[str, Any]) -> dict[str, Any]:
    """A known-good claim that can never apply: its key never exists (the writer's probe)."""
    return {"TableName": table, "Item": item, "ConditionExpression": "attribute_exists(dedup_id)"}


def claimant(item: dict[str, Any] | None) -> str:
    """The event that holds a claim, from the stored claim ("" when not known)."""
    return str((item or {}).get("event_id", {}).get("S", ""))


class ClaimExists(msgspec.Struct, frozen=True, gc=False):
    """What DLQ replay reads of a claim: its key, to know that it exists."""

    dedup_id: StringValue


claim_exists_answer = msgspec.json.Decoder(BatchGetAnswer[ClaimExists], strict=False)
CLAIM_EXISTS_PROJECTION = ", ".join(ClaimExists.__struct_fields__)
