"""The dead-letter message: what the writer puts on the dead-letter queue and what
``triggers dlq`` reads back and replays.

Its body is a queue message (shared/contract/envelope.py): the message as it came, or one
event alone in the normal envelope. Its message attributes, written and read only here:

- ``failure_reason``: why it was set apart (an exception type and DynamoDB's or msgspec's
  message, never the payload), at most ``MAX_REASON_CHARS``. A message SQS itself moved
  after ``maxReceiveCount`` has none: ``reason_of`` says so.
- ``source_message_id``: the id of the queue message it came in (writer only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FAILURE_REASON_ATTRIBUTE = "failure_reason"
SOURCE_MESSAGE_ATTRIBUTE = "source_message_id"
MAX_REASON_CHARS = 1000
REDRIVEN_REASON = "redriven by SQS after maxReceiveCount"


def string_attribute(value: str) -> dict[str, str]:
    """A String message attribute, as SendMessage(Batch) takes it."""
    return {"DataType": "String", "StringValue": value}


def dead_letter_attributes(reason: str, source_message_id: str | None = None) -> dict[str, dict[str, str]]:
    """The message attributes of a dead letter set apart for ``reason``."""
    attributes = {FAILURE_REASON_ATTRIBUTE: string_attribute(reason[:MAX_REASON_CHARS])}
    if source_message_id is not None:
        attributes[SOURCE_MESSAGE_ATTRIBUTE] = string_attribute(source_message_id)
    return attributes


def reason_of(attributes: Mapping[str, Any]) -> str:
    """The reason of a received dead letter, from its ``MessageAttributes``."""
    value = attributes.get(FAILURE_REASON_ATTRIBUTE, {})
    return str(value.get("StringValue", REDRIVEN_REASON))
