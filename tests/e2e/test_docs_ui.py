"""The docs pages (/docs: Swagger UI, /redoc: ReDoc) of both services, rendered by a real
browser: headless Chromium loads each page from the running service and must list every
documented operation, driven from the route declarations (``route_groups()``).

Each page goes out with a Content-Security-Policy whose sources are all ``'self'``, so the
browser refuses anything off-host: a page that needed a CDN would render nothing here, and
a page that merely tried to reach one leaves a violation in the console log, which fails the
test too. scripts/test installs Debian's chromium when it is missing; without it the test
fails, never skips: the pages would go untested.
"""

from __future__ import annotations

import html
import re
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from inbox_api import app as inbox_app
from ingest_api import app as ingest_app
from shared.web.docs_ui import REDOC_PATH, SWAGGER_UI_PATH
from shared.web.openapi import operation_id
from shared.web.routes import RouteGroup
from tests.conftest import Service

CHROMIUM = Path("/usr/bin/chromium")
# /work/shared/reference/machine-facts.md, "A browser for tests"; the virtual time budget
# lets the page fetch its document and render before the DOM is dumped.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",
    "--enable-logging=stderr",
    "--v=0",
)
GROUPS: dict[str, Callable[[], list[RouteGroup]]] = {
    "ingest": ingest_app.route_groups,
    "inbox": inbox_app.route_groups,
}
# How each page marks one operation: Swagger UI's element id, ReDoc's section id.
MARKERS: dict[str, Callable[[str, str], str]] = {
    SWAGGER_UI_PATH: lambda tag, op: f'id="operations-{tag}-{op}"',
    REDOC_PATH: lambda _tag, op: f'data-section-id="operation/{op}"',
}
_HOSTED_SOURCE = re.compile(r"^(?:'self'|'none'|'unsafe-inline'|data:|blob:)$")


@dataclass(frozen=True)
class Rendered:
    dom: str
    console: list[str]  # what the page logged: CSP violations, failed loads, errors


def _render(url: str, profile: Path) -> Rendered:
    result = subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return Rendered(result.stdout, console)


@pytest.fixture(scope="module")
def rendered(ingest: Service, inbox: Service, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    """Both pages of both services, rendered at once (one browser each, fresh profiles)."""
    assert CHROMIUM.exists(), "no /usr/bin/chromium: scripts/test installs Debian's chromium package"
    urls = {
        f"{name}{page}": f"{service.url}{page}"
        for name, service in (("ingest", ingest), ("inbox", inbox))
        for page in MARKERS
    }
    with ThreadPoolExecutor(len(urls)) as pool:
        futures = {key: pool.submit(_render, url, tmp_path_factory.mktemp("chromium")) for key, url in urls.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize("page", sorted(MARKERS))
@pytest.mark.parametrize("name", sorted(GROUPS))
def test_the_page_lists_every_documented_operation_and_reaches_nothing_off_host(
    http: httpx.Client, rendered: dict[str, Rendered], name: str, page: str, request: pytest.FixtureRequest
) -> None:
    service: Service = request.getfixturevalue(name)
    answer = http.get(f"{service.url}{page}")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    policy = answer.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert all(_HOSTED_SOURCE.match(source) for value in directives.values() for source in value.split()), policy

    shown = rendered[f"{name}{page}"]
    operations = [(group.tag, route) for group in GROUPS[name]() for route in group.routes if route.documented]
    assert len(operations) >= 3
    for tag, route in operations:
        assert MARKERS[page](tag, operation_id(route)) in shown.dom, (page, route.method, route.path)
        assert html.escape(route.summary, quote=False) in shown.dom, (page, route.summary)
    assert shown.console == [], shown.console


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_the_docs_pages_and_their_files_are_public_and_served_by_the_service(
    http: httpx.Client, name: str, request: pytest.FixtureRequest
) -> None:
    """Every file the pages load is one of the service's own declared routes, without a key."""
    service: Service = request.getfixturevalue(name)
    docs = [
        route
        for group in GROUPS[name]()
        if group.scope is None
        for route in group.routes
        if route.path.startswith((SWAGGER_UI_PATH, REDOC_PATH))
    ]
    pages = {SWAGGER_UI_PATH, REDOC_PATH}
    assert pages <= {route.path for route in docs}
    for route in docs:
        answer = http.get(f"{service.url}{route.path}")
        assert answer.status_code == 200, route.path
        assert answer.content, route.path
        if route.path not in pages:  # versioned paths: a new bundle is a new URL
            assert "immutable" in answer.headers["cache-control"], route.path
    for page in pages:
        loaded = re.findall(r'(?:src|href)="([^"]+)"', http.get(f"{service.url}{page}").text)
        assert loaded, page
        assert set(loaded) <= {route.path for route in docs}, (page, loaded)
