"""The embedded local AWS endpoint behind ``triggers up`` and the tests: moto's server, with
DynamoDB transactions made isolated and cheap.

Who uses what: ``triggers up`` and the tests run SQS here and DynamoDB on DynamoDB Local
(shared/local/dynamodb_local.py) by default. moto's DynamoDB, and so the transaction patch
below, serves only the fallback: ``triggers up`` with no Java or ``--backend moto``, and the
tests of the data layer that run on both (tests/conftest.py's ``moto_stack``). The granian
server further down serves SQS on every backend.

moto (5.x) applies a TransactWriteItems item by item and, if a later item fails, restores
deep copies of every table it touched. Two things follow on a threaded server: a cancelled
transaction can restore a snapshot taken before another request's write and so erase it
(seen: an undelivered counter lost an increment when a concurrent duplicate's transaction
was cancelled), and each transaction costs time proportional to the size of its tables.
Real DynamoDB transactions are serializable and their cost does not grow with the table.

This module keeps moto's application and replaces two things, for local use only: every
DynamoDB request runs under one lock (moto serves Python-speed requests on one GIL anyway),
and a transaction checks all its conditions first, then applies its writes, restoring only
the items it touched if a write fails. Nothing in the project's own code depends on this; it
makes the emulator behave like the service.

It also serves moto's WSGI application with granian (already the services' server) instead
of werkzeug's development server, which closes every connection after one response: each
AWS call then paid a TCP handshake and a new server thread. Kept-alive connections, as AWS
keeps them, make a small call about a third faster (GetItem 1.7 → 1.1 ms) and cut its
client-side CPU to a third.

Run: python -m shared.local.endpoint -H 127.0.0.1 -p PORT   (host and port, as moto_server takes them)
"""

from __future__ import annotations

import argparse
import functools
import os
import threading
from collections.abc import Callable
from typing import Any

from granian import Granian
from granian.constants import Interfaces
from moto.dynamodb import responses as dynamodb_responses
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from shared.runtime import die_with_parent

MAX_TRANSACTION_ITEMS = 100
# Requests served at once: SQS long polls hold one each for up to 20 s, so this is well
# above the long polls a local pipeline and the test suite keep open together.
CONCURRENT_REQUESTS = 256
_LOCK = threading.RLock()
_CONDITION_FAILED = ("ConditionalCheckFailed", "The conditional request failed")


def _serialized(call_action: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(call_action)
    def locked(self: Any) -> Any:
        with _LOCK:
            return call_action(self)

    return locked


def _key(backend: DynamoDBBackend, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type != "Put":
        return dict(op["Key"])
    table = backend.get_table(op["TableName"])
    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = op["Item"][table.range_key_attr]
    return key


def _check(backend: DynamoDBBackend, op: dict[str, Any], current: Any) -> tuple[Any, ...]:
    """(None, None, None) if the item's condition holds, else its cancellation reason."""
    condition = op.get("ConditionExpression")
    if condition is None:
        return (None, None, None)
    expression = get_filter_expression(
        condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
    )
    if expression.expr(current):
        return (None, None, None)
    old = None
    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
        old = current.to_json()["Attributes"]
    return (*_CONDITION_FAILED, old)


def _apply(backend: DynamoDBBackend, op_type: str, op: dict[str, Any], key: dict[str, Any]) -> None:
    names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
    if op_type == "Put":
        backend.put_item(op["TableName"], op["Item"])
    elif op_type == "Delete":
        backend.delete_item(op["TableName"], key)
    elif op_type == "Update":
        backend.update_item(
            op["TableName"],
            key,
            update_expression=op["UpdateExpression"],
            expression_attribute_names=names or {},
            expression_attribute_values=values or {},
        )


def _restore(backend: DynamoDBBackend, table_name: str, key: dict[str, Any], previous: Any) -> None:
    if previous is None:
        backend.delete_item(table_name, key)
    else:
        backend.put_item(table_name, previous.to_json()["Attributes"])


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """All conditions first, then all writes: the transaction is all or nothing."""
    if len(transact_items) > MAX_TRANSACTION_ITEMS:
        raise TooManyTransactionsException()
    plan, reasons, seen = [], [], set()
    for item in transact_items:
        if len(item) > 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(item.items()))
        key = _key(self, op_type, op)
        identity = (op["TableName"], str(sorted(key.items())))
        if identity in seen:
            raise MultipleTransactionsException()
        seen.add(identity)
        current = self.get_item(op["TableName"], key)
        reasons.append(_check(self, op, current))
        plan.append((op_type, op, key, current))
    if any(code is not None for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)
    done: list[tuple[str, dict[str, Any], Any]] = []
    for index, (op_type, op, key, current) in enumerate(plan):
        try:
            if op_type != "ConditionCheck":
                _apply(self, op_type, op, key)
        except Exception as exc:
            for table_name, touched_key, previous in reversed(done):
                _restore(self, table_name, touched_key, previous)
            if isinstance(exc, MockValidationException):
                raise
            failed: list[tuple[str | None, str | None, None]] = [(None, None, None)] * len(plan)
            failed[index] = (type(exc).__name__, str(exc), None)
            raise TransactionCanceledException(failed) from exc
        done.append((op["TableName"], key, current))


def install() -> None:
    dynamodb_responses.DynamoHandler.call_action = _serialized(dynamodb_responses.DynamoHandler.call_action)  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def wsgi_app() -> Any:
    """moto's application with the changes above; the factory granian's worker calls."""
    die_with_parent()  # granian forks the worker: it must not outlive the server
    install()
    return DomainDispatcherApplication(create_backend_app)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto's AWS endpoint, for local use")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # moto writes it into queue URLs
    Granian(
        "shared.local.endpoint:wsgi_app",
        factory=True,
        interface=Interfaces.WSGI,
        address=args.host,
        port=args.port,
        workers=1,
        blocking_threads=CONCURRENT_REQUESTS,
        log_enabled=False,
    ).serve()


if __name__ == "__main__":
    main()
