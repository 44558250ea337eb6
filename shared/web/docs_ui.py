"""The interactive API pages of both services: Swagger UI at /docs, ReDoc at /redoc, over the
document the service serves at /schema/openapi.json (shared/web/openapi.py).

Offline by construction: every file the pages load is served by the service itself, from a
package (Swagger UI: the ``swagger-ui-bundle-v2`` wheel, which ships swagger-ui-dist) or from
shared/web/docs_assets/ (ReDoc, which no Python package ships: vendored, with its licence
and how to refresh it in the README there). No page has an inline script, and each goes out
with a Content-Security-Policy whose sources are all ``'self'``: a browser refuses anything
off-host even if a future version of either bundle asks for it (tests/e2e/test_docs_ui.py
loads both pages in Chromium under it).

The asset paths carry the bundle's version, so they are cached for good and a new version
is a new URL; the pages themselves are revalidated on every visit.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable
from dataclasses import dataclass
from importlib.abc import Traversable
from pathlib import Path

from litestar import Response

from shared.web.routes import Route

SWAGGER_UI_PATH = "/docs"
REDOC_PATH = "/redoc"
REDOC_VERSION = "2.5.4"  # shared/web/docs_assets/redoc/README.md says how to refresh it
_REDOC_DIR = Path(__file__).parent / "docs_assets" / "redoc"
_REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"

# 'self' for everything. Styles may also be inline: both bundles set style attributes and
# ReDoc writes its styled-components rules into <style> elements (no off-host source).
# Images may be data: URLs (Swagger UI's icons are inlined SVG). ReDoc runs its search index
# in a worker it builds from a blob: URL of its own bundle.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}
_ASSET_HEADERS = {"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True, slots=True)
class _File:
    path: str
    media_type: str
    body: bytes
    headers: dict[str, str]


def _swagger_ui_dir() -> tuple[str, Traversable]:
    """The Swagger UI version the installed swagger-ui-bundle-v2 ships, and its directory
    (vendor/swagger-ui-<version>/), found rather than imported: the package has no types."""
    vendor = importlib.resources.files("swagger_ui_bundle") / "vendor"
    (found,) = [entry for entry in vendor.iterdir() if entry.name.startswith("swagger-ui-")]
    return found.name.removeprefix("swagger-ui-"), found


def _page(title: str, head: str, body: str) -> bytes:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{title}</title>\n'
        f"{head}\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    ).encode()


def _swagger_files(title: str, document_path: str) -> list[_File]:
    version, directory = _swagger_ui_dir()
    base = f"{SWAGGER_UI_PATH}/{version}"
    # validatorUrl null: Swagger UI would otherwise send the document to an online validator.
    init = (
        "window.addEventListener('load', function () {\n"
        f"  window.ui = SwaggerUIBundle({{url: '{document_path}', dom_id: '#swagger-ui', validatorUrl: null,\n"
        "    deepLinking: true, presets: [SwaggerUIBundle.presets.apis], layout: 'BaseLayout'});\n"
        "});\n"
    ).encode()
    page = _page(
        f"{title}: Swagger UI",
        f'<link rel="stylesheet" href="{base}/swagger-ui.css">',
        f'<div id="swagger-ui"></div>\n<script src="{base}/swagger-ui-bundle.js"></script>\n'
        f'<script src="{base}/init.js"></script>',
    )
    return [
        _File(SWAGGER_UI_PATH, "text/html", page, _PAGE_HEADERS),
        _File(f"{base}/swagger-ui.css", "text/css", (directory / "swagger-ui.css").read_bytes(), _ASSET_HEADERS),
        _File(
            f"{base}/swagger-ui-bundle.js",
            "text/javascript",
            (directory / "swagger-ui-bundle.js").read_bytes(),
            _ASSET_HEADERS,
        ),
        _File(f"{base}/init.js", "text/javascript", init, _ASSET_HEADERS),
    ]


def _redoc_files(title: str, document_path: str) -> list[_File]:
    script = f"{REDOC_PATH}/{REDOC_VERSION}/redoc.standalone.js"
    # The bundle renders every <redoc spec-url> element by itself: no inline script needed.
    page = _page(f"{title}: ReDoc", "", f'<redoc spec-url="{document_path}"></redoc>\n<script src="{script}"></script>')
    # The one off-host URL in the bundle: the Redocly logo of the side menu, always shown.
    # An empty src fails at once, without a request, and the bundle then hides the image.
    bundle = (_REDOC_DIR / "redoc.standalone.js").read_bytes().replace(_REDOC_LOGO, b"")
    return [
        _File(REDOC_PATH, "text/html", page, _PAGE_HEADERS),
        _File(script, "text/javascript", bundle, _ASSET_HEADERS),
    ]


def _serve(file: _File) -> Callable[[], Response[bytes]]:
    def serve() -> Response[bytes]:
        return Response(file.body, media_type=file.media_type, headers=file.headers)

    serve.__name__ = serve.__qualname__ = "docs_" + file.path.strip("/").replace("/", "_").replace(".", "_")
    return serve


def docs_ui_routes(title: str, document_path: str) -> tuple[Route, ...]:
    """GET /docs and /redoc and the files they load: public, and not in the document (like
    the document's own route). The files are read once, when the router is built."""
    files = [*_swagger_files(title, document_path), *_redoc_files(title, document_path)]
    return tuple(
        Route("get", file.path, f"API docs: {file.path}", _serve(file), 200, documented=False) for file in files
    )
