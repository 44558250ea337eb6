"""AWS Signature Version 4 for the lean clients' one request shape: a JSON POST to ``/``.

botocore's ``SigV4Auth`` builds a generic request model, parses the URL and recomputes the
whole HMAC key chain on every call: about a tenth of a millisecond of CPU, twice per inbox
page. This signer handles only what the lean clients send (POST, path ``/``, no query, the
headers below) and keeps the derived signing key for the day. It is tested header for
header against botocore's signer (tests/unit/test_sigv4.py), which stays the reference.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlsplit

_ALGORITHM = "AWS4-HMAC-SHA256"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_of(url: str) -> str:
    """The Host header botocore signs: the port only when it is not the scheme's default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        return f"{host}:{parts.port}"
    return host


class JsonPostSigner:
    def __init__(self, url: str, region: str, service: str) -> None:
        self._host = host_of(url)
        self._region = region
        self._service = service
        self._key_for: tuple[str, str] = ("", "")  # (secret key, date) the cached key belongs to
        self._key = b""

    def headers(
        self, body: bytes, target: str, content_type: str, credentials: Any, now: float | None = None
    ) -> dict[str, str]:
        """The request's headers, ``Authorization`` included. ``credentials`` is botocore's
        ReadOnlyCredentials (access_key, secret_key, token)."""
        stamp = time.gmtime(time.time() if now is None else now)
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", stamp)
        date = amz_date[:8]
        headers = {"content-type": content_type, "host": self._host, "x-amz-date": amz_date, "x-amz-target": target}
        if credentials.token:
            headers["x-amz-security-token"] = credentials.token
        names = sorted(headers)
        signed = ";".join(names)
        canonical = "\n".join(
            (
                "POST",
                "/",
                "",
                "".join(f"{name}:{headers[name]}\n" for name in names),
                signed,
                hashlib.sha256(body).hexdigest(),
            )
        )
        scope = f"{date}/{self._region}/{self._service}/aws4_request"
        to_sign = f"{_ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(credentials.secret_key, date), to_sign.encode(), hashlib.sha256)
        headers["authorization"] = (
            f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature.hexdigest()}"
        )
        return headers

    def _signing_key(self, secret_key: str, date: str) -> bytes:
        if self._key_for != (secret_key, date):
            key = f"AWS4{secret_key}".encode()
            for part in (date, self._region, self._service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._key, self._key_for = key, (secret_key, date)
        return self._key
