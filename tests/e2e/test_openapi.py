"""Each service serves an OpenAPI document that covers its routes, with examples."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Service

ROUTES = {
    # /ready and /metrics are on the admin listener only, not in the public document.
    "ingest": {("post", "/events"), ("post", "/events/batch"), ("get", "/status")},
    "inbox": {
        ("get", "/inbox"),
        ("get", "/events/{event_id}"),
        ("delete", "/events/{event_id}"),
        ("post", "/inbox/ack"),
        ("get", "/status"),
    },
}


@pytest.mark.parametrize("name", ["ingest", "inbox"])
def test_the_document_covers_every_route_with_examples(
    http: httpx.Client, name: str, request: pytest.FixtureRequest
) -> None:
    service: Service = request.getfixturevalue(name)
    document = http.get(f"{service.url}/schema/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    operations = {(method, path) for path, item in document["paths"].items() for method in item}
    assert operations == ROUTES[name]
    schemas = document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                content = response.get("content", {}).get("application/json")
                if content is None:
                    continue
                assert "example" in content, (method, path, status)
                name_of_schema = content["schema"]["$ref"].rsplit("/", 1)[1]
                assert name_of_schema in schemas
            if "requestBody" in operation:
                assert "example" in operation["requestBody"]["content"]["application/json"]
            if path != "/status":
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
