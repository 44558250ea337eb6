"""The ingest API's OpenAPI document, as GET /schema/openapi.json serves it.

Built from the route declarations of ingest_api/app.py (``INGEST_ROUTES``), the same ones
the router is built from; named here for the tools and tests that read the document.
"""

from __future__ import annotations

from ingest_api.app import document

__all__ = ["document"]
