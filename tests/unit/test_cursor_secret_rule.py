"""When the inbox may sign cursors with a secret anyone can read (unset, or one this
repository publishes): only where both its DynamoDB endpoint and its listening address are
this machine's loopback."""

from __future__ import annotations

import pytest

from shared.settings import LOCAL_CURSOR_SECRET, PUBLISHED_CURSOR_SECRETS, inbox_cursor_secret, settings_from_env

LOCAL_DB = "http://127.0.0.1:4566"
ANY_ADDRESS = "0.0.0.0"  # noqa: S104 - the listening address under test
OWN_SECRET = "k3jV9q-tR2xPz8wL0aYc5Nf7"  # noqa: S105 - a test value


def secret_for(endpoint: str | None, host: str, secret: str = "") -> str:
    env = {"TRIGGERS_HOST": host, "TRIGGERS_CURSOR_SECRET": secret}
    if endpoint:
        env["TRIGGERS_DYNAMODB_ENDPOINT_URL"] = endpoint
        env["TRIGGERS_AWS_ENDPOINT_URL"] = endpoint
    return inbox_cursor_secret(settings_from_env(env))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
@pytest.mark.parametrize("endpoint", [LOCAL_DB, "http://localhost:8000", "http://[::1]:8000"])
def test_fully_local_use_may_run_without_a_secret(endpoint: str, host: str) -> None:
    assert secret_for(endpoint, host) == LOCAL_CURSOR_SECRET
    for published in PUBLISHED_CURSOR_SECRETS:
        assert secret_for(endpoint, host, published) == published


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [
        (LOCAL_DB, ANY_ADDRESS),  # DynamoDB Local, but an inbox the network reaches
        (LOCAL_DB, "::"),
        (LOCAL_DB, "10.0.0.5"),
        ("http://localstack:4566", ANY_ADDRESS),  # docker-compose.yml
        ("http://localstack:4566", "127.0.0.1"),
        ("https://dynamodb.us-east-1.amazonaws.com", "127.0.0.1"),
        (None, "127.0.0.1"),  # real AWS
    ],
)
@pytest.mark.parametrize("secret", ["", *sorted(PUBLISHED_CURSOR_SECRETS)])
def test_anything_else_refuses_an_unset_or_published_secret(endpoint: str | None, host: str, secret: str) -> None:
    with pytest.raises(SystemExit, match="TRIGGERS_CURSOR_SECRET"):
        secret_for(endpoint, host, secret)
    assert secret_for(endpoint, host, OWN_SECRET) == OWN_SECRET


def test_the_compose_files_value_is_refused_as_published() -> None:
    assert "change-me-for-anything-but-local-use" in PUBLISHED_CURSOR_SECRETS
    with pytest.raises(SystemExit, match="16 characters"):
        secret_for(None, ANY_ADDRESS, "short")
