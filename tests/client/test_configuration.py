"""A base URL or API key the client cannot use is refused when the client is made, by both forms.

Before, a URL without a scheme failed each call with httpx's own UnsupportedProtocol (out of
the client's hierarchy), and a bad port as "connection refused", retried; a key with a
trailing newline failed each call with h11's LocalProtocolError, which quotes the header.
"""

from __future__ import annotations

import pytest

from triggers_client import AsyncTriggersClient, ConfigurationError, TriggersClient, TriggersError

CLIENTS = [TriggersClient, AsyncTriggersClient]
GOOD = "http://127.0.0.1:8000"


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("localhost:8000", "has no scheme: write it as http://localhost:8000"),
        ("127.0.0.1:8000", "has no scheme: write it as http://127.0.0.1:8000"),
        ("//localhost:8000", "has no scheme: write it as http://localhost:8000"),
        ("", "is empty"),
        ("ftp://files.example", "has the scheme 'ftp'"),
        ("http://", "names no host"),
        ("http:///events", "names no host"),
        ("http://[::1", "is not a URL"),
        ("http://127.0.0.1:99999", "has the port 99999"),
        ("http://127.0.0.1:0", "has the port 0"),
        ("http://127.0.0.1:8000/?tenant=a", "has a query or fragment"),
        ("http://127.0.0.1:8000/#top", "has a query or fragment"),
    ],
)
def test_an_unusable_base_url_is_refused_at_construction(client: type, url: str, says: str) -> None:
    for field in ("ingest_url", "inbox_url"):
        urls = {"ingest_url": GOOD, "inbox_url": GOOD, field: url}
        with pytest.raises(ConfigurationError) as caught:
            client("trg_k", **urls)
        assert caught.value.error_code == "INVALID_BASE_URL"
        assert caught.value.status is None
        assert not caught.value.retryable
        assert str(caught.value).startswith(f"INVALID_BASE_URL: {field} ")
        assert says in str(caught.value)


@pytest.mark.parametrize("client", CLIENTS)
def test_credentials_in_a_base_url_are_refused_and_not_shown(client: type) -> None:
    # httpx would send them as Basic auth in place of the key.
    with pytest.raises(ConfigurationError, match="holds credentials") as caught:
        client("trg_k", ingest_url="http://user:s3cret@127.0.0.1:8000", inbox_url=GOOD)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("key", ["", "trg_k\n", " trg_k", "trg k", "trg_\x00k", "trg_clé"])
def test_an_api_key_no_header_can_carry_is_refused_and_not_shown(client: type, key: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        client(key, ingest_url=GOOD, inbox_url=GOOD)
    assert caught.value.error_code == "INVALID_API_KEY"
    if key:
        assert key.strip() not in str(caught.value)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000", "https://triggers.example/", " http://[::1]:8001/api/ \n", "HTTP://Example.com"],
)
def test_usable_base_urls_are_taken(client: type, url: str) -> None:
    made = client("trg_0123456789abcdef_" + "a" * 43, ingest_url=url, inbox_url=url)
    assert made._calls.ingest == url.strip().rstrip("/")


def test_a_configuration_error_is_a_triggers_error() -> None:
    assert issubclass(ConfigurationError, TriggersError)
