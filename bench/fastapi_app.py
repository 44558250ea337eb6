"""The design users would otherwise build: FastAPI + pydantic, one DynamoDB PutItem per event.

Measured beside the real edge by bench/compare.py. To keep the comparison fair it checks
keys exactly as the edge does (``shared.keys.authenticator``: bcrypt once, then the in-memory cache), it
validates the same fields, and it writes through aiobotocore, the client such a service
would use. Keys are read from moto; events go to ``BENCH_PUT_ENDPOINT_URL`` (bench/fake_aws.py
answers PutItem and counts it), so DynamoDB is not the bottleneck, as SQS is not for the edge.

Run: uvicorn bench.fastapi_app:app
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from aiobotocore.session import ClientCreatorContext, get_session
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from types_aiobotocore_dynamodb import DynamoDBClient

from shared.contract.ids import new_event_id, rfc3339
from shared.errors import AppError
from shared.keys.authenticator import build_authenticator
from shared.keys.model import Scope
from shared.keys.store import DynamoKeyStore
from shared.settings import get_settings


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event_type: str = Field(min_length=1, max_length=255)
    payload: dict[str, Any]
    idempotency_key: str | None = Field(default=None, max_length=255)


class Accepted(BaseModel):
    event_id: str
    status: str
    received_at: str


def _client(endpoint_url: str | None) -> ClientCreatorContext[DynamoDBClient]:
    return get_session().create_client(
        "dynamodb",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",  # noqa: S106 - placeholders for local endpoints
    )


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    async with (
        _client(settings.aws_endpoint_url) as keys,
        _client(os.environ["BENCH_PUT_ENDPOINT_URL"]) as events,
    ):
        # The usual design: plain aiobotocore, on which the key store's get/update calls work alike.
        store = DynamoKeyStore(keys, settings.keys_table)  # type: ignore[arg-type]
        app.state.auth = build_authenticator(settings, store)
        app.state.events = events
        app.state.table = settings.events_table
        yield


app = FastAPI(lifespan=lifespan)


@app.exception_handler(AppError)
async def app_error(_: Request, exc: AppError) -> JSONResponse:
    return JSONResponse({"status": exc.status, "error_code": exc.error_code, "message": exc.message}, exc.status)


@app.post("/events", status_code=202)
async def post_event(
    event: EventIn, request: Request, authorization: Annotated[str | None, Header()] = None
) -> Accepted:
    key = await request.app.state.auth.authenticate(authorization, Scope.INGEST)
    received_us = time.time_ns() // 1000
    event_id = new_event_id(received_us // 1000)
    await request.app.state.events.put_item(
        TableName=request.app.state.table,
        Item={
            "pk": {"S": key.account_id},
            "sk": {"S": event_id},
            "event_type": {"S": event.event_type},
            "payload": {"S": json.dumps(event.payload)},
            "received_at_us": {"N": str(received_us)},
        },
    )
    return Accepted(event_id=event_id, status="accepted", received_at=rfc3339(received_us))
