"""Where a running ``triggers up`` tells other ``triggers`` commands its local AWS endpoint.

``triggers up`` writes a small state file; any command started while it runs, with no
endpoint of its own configured, uses the same endpoint. A state file left by a process that
no longer runs is ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class EmbeddedState(msgspec.Struct, frozen=True):
    endpoint_url: str
    pid: int


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


def read_embedded_endpoint() -> str | None:
    path = state_file()
    try:
        state = msgspec.json.decode(path.read_bytes(), type=EmbeddedState)
    except (OSError, msgspec.DecodeError):
        return None
    return state.endpoint_url if _alive(state.pid) else None


def write_embedded_endpoint(endpoint_url: str) -> Path:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(EmbeddedState(endpoint_url, os.getpid())))
    return path


def clear_embedded_endpoint() -> None:
    path = state_file()
    try:
        state = msgspec.json.decode(path.read_bytes(), type=EmbeddedState)
    except (OSError, msgspec.DecodeError):
        return
    if state.pid == os.getpid():
        path.unlink(missing_ok=True)
