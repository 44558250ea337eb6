"""Where a running ``triggers up`` tells other ``triggers`` commands its local AWS endpoints.

``triggers up`` writes a small state file; any command started while it runs, with no
endpoint of its own configured, uses the same endpoints. A state file left by a process that
no longer runs is ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import msgspec

Backend = Literal["moto", "dynamodb-local"]
BACKENDS: tuple[Backend, ...] = ("dynamodb-local", "moto")


class EmbeddedState(msgspec.Struct, frozen=True):
    """What runs: fields are only ever added, with defaults (a file of an older `up` reads)."""

    endpoint_url: str  # moto's: SQS, and DynamoDB too on the moto backend
    pid: int
    backend: Backend = "moto"
    dynamodb_endpoint_url: str | None = None  # DynamoDB Local's, on the dynamodb-local backend

    def endpoint_env(self) -> dict[str, str]:
        """The settings that send a process's SQS and DynamoDB calls where this state says."""
        if self.dynamodb_endpoint_url is None:
            return {"TRIGGERS_AWS_ENDPOINT_URL": self.endpoint_url}
        return {
            "TRIGGERS_SQS_ENDPOINT_URL": self.endpoint_url,
            "TRIGGERS_DYNAMODB_ENDPOINT_URL": self.dynamodb_endpoint_url,
        }


def state_file() -> Path:
    base = os.environ.get("TRIGGERS_STATE_DIR") or str(Path.home() / ".triggers")
    return Path(base) / "embedded.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read() -> EmbeddedState | None:
    try:
        return msgspec.json.decode(state_file().read_bytes(), type=EmbeddedState)
    except (OSError, msgspec.DecodeError):
        return None


def read_embedded_state() -> EmbeddedState | None:
    """The state of a running `triggers up`, or None."""
    state = _read()
    return state if state is not None and _alive(state.pid) else None


def write_embedded_state(state: EmbeddedState) -> Path:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(state))
    return path


def clear_embedded_endpoint() -> None:
    state = _read()
    if state is not None and state.pid == os.getpid():
        state_file().unlink(missing_ok=True)
