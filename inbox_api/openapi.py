"""The inbox API's OpenAPI document, as GET /schema/openapi.json serves it.

Built from the route declarations of inbox_api/app.py (``INBOX_ROUTES``), the same ones the
router is built from; named here for the tools and tests that read the document.
"""

from __future__ import annotations

from inbox_api.app import document

__all__ = ["document"]
