"""What can be checked of the container files here (no Docker engine on this machine):
the compose file is well formed and asks only for commands and settings that exist, and
the image runs `triggers` as a non-root user."""

from __future__ import annotations

from typing import Any

import yaml

from shared.settings import ENV_PREFIX, Settings
from tests.conftest import ROOT, Stack, run_triggers


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def test_every_compose_command_is_a_triggers_command(stack: Stack) -> None:
    services = _compose()["services"]
    commands = [s["command"] for name, s in services.items() if name != "localstack"]
    assert {c[0] for c in commands} == {"init", "run"}
    for command in commands:
        words = [w for w in command if not w.startswith("--") and not w.isdigit()]
        assert run_triggers(stack, *words, "--help").returncode == 0, command


def test_every_compose_setting_is_a_real_setting() -> None:
    known = {ENV_PREFIX + name.upper() for name in Settings.__struct_fields__}
    for name, service in _compose()["services"].items():
        if name == "localstack":
            continue
        names = {k for k in service["environment"] if k.startswith(ENV_PREFIX)}
        assert names <= known, names - known
        assert service["depends_on"]


def test_the_image_runs_triggers_as_a_non_root_user() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert 'ENTRYPOINT ["triggers"]' in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users == ["triggers"]
    assert sum(line.startswith("FROM ") for line in lines) == 2  # build stage, then a slim runtime
