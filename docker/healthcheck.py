"""The image's HEALTHCHECK: exit 0 when this container's service answers its liveness check.

Standard library only (slim images have no curl). One image runs every part, so the check
finds what this container serves: ``TRIGGERS_HEALTHCHECK_URL`` when set; otherwise the
public ``/status`` of ingest and inbox on their ports (``TRIGGERS_INGEST_PORT``, default
8000, ``TRIGGERS_INBOX_PORT``, 8001) and, for the writer, its ``/metrics`` when
``TRIGGERS_METRICS_PORT`` is set. Healthy when one of them answers 200 (``/status`` with
``"status": "ok"``). A writer without a metrics port has nothing to ask: it reports
unhealthy, so set the port (or ``--no-healthcheck``) for writer containers.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

TIMEOUT_S = 2.0


def candidates(env: dict[str, str]) -> list[str]:
    if env.get("TRIGGERS_HEALTHCHECK_URL"):
        return [env["TRIGGERS_HEALTHCHECK_URL"]]
    ports = (env.get("TRIGGERS_INGEST_PORT", "8000"), env.get("TRIGGERS_INBOX_PORT", "8001"))
    urls = [f"http://127.0.0.1:{port}/status" for port in ports]
    if env.get("TRIGGERS_METRICS_PORT"):
        urls.append(f"http://127.0.0.1:{env['TRIGGERS_METRICS_PORT']}/metrics")
    return urls


def healthy(url: str) -> bool:
    try:
        # No proxy: a container's HTTP_PROXY must not route its own loopback check.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=TIMEOUT_S) as answer:
            body = answer.read()
    except OSError:  # refused, timed out, or an HTTP error status
        return False
    if url.endswith("/status"):
        try:
            return bool(json.loads(body).get("status") == "ok")
        except (ValueError, AttributeError):
            return False
    return True


def main() -> int:
    for url in candidates(dict(os.environ)):
        if healthy(url):
            return 0
    print("no service answered: " + ", ".join(candidates(dict(os.environ))), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
