"""Each service serves an OpenAPI document that covers its routes, with examples.

The routes expected are the service's route declarations (``route_groups()``, which its
router and document are built from), and they are checked against the router the service's
``create_app()`` really builds: a route served but not declared, or declared but not
served, fails here.
"""

from __future__ import annotations

import re
from types import ModuleType

import httpx
import pytest

from inbox_api import app as inbox_app
from ingest_api import app as ingest_app
from shared.web.openapi import DOCUMENT_PATH
from tests.conftest import Service, Stack

APPS: dict[str, ModuleType] = {"ingest": ingest_app, "inbox": inbox_app}


def _declared(module: ModuleType, documented: bool | None = None) -> set[tuple[str, str]]:
    """(method, path) of the declared routes; ``documented``: only those (not) in the document."""
    return {
        (route.method, route.path)
        for group in module.route_groups()
        for route in group.routes
        if documented is None or route.documented == documented
    }


def _routed(module: ModuleType, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> set[tuple[str, str]]:
    """(method, path) of every handler of the app ``create_app()`` builds, in OpenAPI's spelling."""
    monkeypatch.setattr(module, "configure_logging", lambda *_, **__: None)  # this process's logging stays
    app = module.create_app(stack.settings)
    return {
        (method.lower(), re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))
        for route in app.routes
        for handler in route.route_handlers
        for method in handler.http_methods
        if method != "OPTIONS"  # Litestar answers OPTIONS for every path by itself
    }


@pytest.mark.parametrize("name", ["ingest", "inbox"])
def test_the_document_covers_every_route_with_examples(
    http: httpx.Client, stack: Stack, name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    service: Service = request.getfixturevalue(name)
    document = http.get(f"{service.url}/schema/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    operations = {(method, path) for path, item in document["paths"].items() for method in item}
    routed = _routed(APPS[name], stack, monkeypatch)
    # /ready and /metrics are on the admin listener only; the document does not list itself
    # nor the docs pages over it (/docs, /redoc and their files).
    assert ("get", "/status") in operations
    undocumented = _declared(APPS[name], documented=False)
    assert ("get", DOCUMENT_PATH) in undocumented
    assert operations == _declared(APPS[name], documented=True)
    assert routed == operations | undocumented
    schemas = document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                content = response.get("content", {}).get("application/json")
                if content is None:
                    continue
                # One example, or named ones (a 400 that lists its documented refusals).
                assert "example" in content or content["examples"], (method, path, status)
                name_of_schema = content["schema"]["$ref"].rsplit("/", 1)[1]
                assert name_of_schema in schemas
            if "requestBody" in operation:
                assert "example" in operation["requestBody"]["content"]["application/json"]
            if path != "/status":
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
                assert operation["security"] == [{"bearer": [name]}], (method, path)  # the scope it needs
