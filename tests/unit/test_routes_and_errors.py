"""The route declarations' rules and the one table of error answers (pure logic)."""

from __future__ import annotations

import pytest

from shared import errors
from shared.errors import BY_STATUS, HTTP_ERROR, AppError, answer_for
from shared.keys.model import KeyRecord, Scope
from shared.web.openapi import error_example
from shared.web.routes import Route, RouteGroup


async def _admit(request: object, scope: Scope) -> KeyRecord:
    raise NotImplementedError


async def _handler() -> None:
    return None


def test_a_group_with_a_scope_needs_an_admit_step_and_the_other_way_round() -> None:
    route = Route("get", "/x", "x", _handler, 200)
    with pytest.raises(ValueError, match="scope"):
        RouteGroup("g", (route,), scope=Scope.INBOX)
    with pytest.raises(ValueError, match="scope"):
        RouteGroup("g", (route,), admit=_admit)
    assert RouteGroup("g", (route,), scope=Scope.INBOX, admit=_admit).scope is Scope.INBOX


def test_path_parameters_are_text_in_the_router_and_bare_in_the_document() -> None:
    route = Route("get", "/events/{event_id}/x/{other}", "x", _handler, 200)
    assert route.router_path == "/events/{event_id:str}/x/{other:str}"


def test_every_error_class_answers_with_its_table_entry() -> None:
    classes = [
        c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, AppError) and c is not AppError
    ]
    assert len(classes) >= 10
    table = {a for a in vars(errors).values() if isinstance(a, errors.ErrorAnswer)}
    for cls in classes:
        assert cls.answer in table, cls
        assert (cls.status, cls.error_code) == (cls.answer.status, cls.answer.code), cls
    codes = [a.code for a in table]
    assert len(codes) == len(set(codes))  # a code means one thing


def test_a_bare_status_stands_for_one_answer_and_the_documents_use_it() -> None:
    assert all(status == answer.status for status, answer in BY_STATUS.items())
    assert answer_for(400).code == "VALIDATION_ERROR"
    assert answer_for(418) is HTTP_ERROR
    for status, answer in BY_STATUS.items():
        example = error_example(status)
        assert (example["status"], example["error_code"], example["message"]) == (status, answer.code, answer.meaning)
