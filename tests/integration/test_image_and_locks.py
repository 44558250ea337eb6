"""Pinned installs and the image's health check.

- The locks (requirements/*.txt, written by scripts/lock) pin every package with hashes, the
  runtime lock agrees with the dev lock, and each pin satisfies what the pyproject files ask
  (a bound raised without re-locking fails here, not on the day an image is built).
- The Dockerfile installs from the runtime lock with hashes and the distributions of this tree
  with nothing resolved, and its HEALTHCHECK runs docker/healthcheck.py, which is run here
  against the session's real ingest and inbox processes (no Docker engine on this machine).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from shared.local import processes
from tests.conftest import ROOT, Service

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)( ;[^\\]*)? \\$")


def pins(lock: str) -> dict[str, set[str]]:
    """name -> pinned versions (a universal lock may pin two, under exclusive markers)."""
    found: dict[str, set[str]] = {}
    lines = (ROOT / "requirements" / lock).read_text().splitlines()
    for number, line in enumerate(lines):
        if not line or line[0] in " #":
            continue
        match = PIN.match(line)
        assert match, f"{lock}:{number + 1} is not 'name==version \\': {line!r}"
        assert lines[number + 1].strip().startswith("--hash=sha256:"), f"{lock}:{number + 1} has no hash"
        found.setdefault(canonicalize_name(match[1]), set()).add(match[2])
    return found


def requirements_of(pyproject: Path, *extras: str) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    texts = list(project.get("dependencies", []))
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def test_every_line_of_both_locks_is_pinned_with_hashes_and_runtime_pins_are_dev_pins() -> None:
    dev, runtime = pins("dev.txt"), pins("runtime.txt")
    assert runtime, "empty runtime lock"
    for name, versions in runtime.items():
        assert versions <= dev.get(name, set()), f"{name}: runtime {versions}, dev {dev.get(name)}"
    # The client is installed from triggers_client/, never from an index.
    assert "triggers-client" not in dev
    assert "triggers-client" not in runtime
    assert "triggers-api" not in dev


@pytest.mark.parametrize(
    ("lock", "pyproject", "extras"),
    [
        ("runtime.txt", "pyproject.toml", ()),
        ("runtime.txt", "triggers_client/pyproject.toml", ()),
        ("dev.txt", "pyproject.toml", ("local", "dev")),
        ("dev.txt", "triggers_client/pyproject.toml", ()),
    ],
)
def test_each_requirement_is_in_the_lock_at_a_version_it_allows(lock: str, pyproject: str, extras: tuple[str]) -> None:
    pinned = pins(lock)
    for requirement in requirements_of(ROOT / pyproject, *extras):
        name = canonicalize_name(requirement.name)
        if name in {"triggers-api", "triggers-client"}:  # this tree's own distributions
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        assert name in pinned, f"{requirement} ({pyproject}) is not in {lock}: run scripts/lock"
        versions = pinned[name]
        assert any(requirement.specifier.contains(v, prereleases=True) for v in versions), (
            f"{lock} pins {name} {versions}, outside {requirement} ({pyproject}): run scripts/lock"
        )


def test_the_dockerfile_installs_the_runtime_lock_with_hashes_then_this_tree_without_resolving() -> None:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    runs = [" ".join(line.split()) for line in text.splitlines() if line.strip().startswith("RUN ")]
    assert any("pip install --require-hashes -r requirements/runtime.txt" in run for run in runs), runs
    assert any("pip install --no-deps --no-build-isolation ./triggers_client ." in run for run in runs), runs
    assert any("pip check" in run for run in runs)
    assert not any(re.search(r"pip install (?!--)", run) for run in runs), "an install that resolves"
    health = [" ".join(line.split()) for line in text.splitlines() if line.startswith("HEALTHCHECK")]
    assert health == [
        'HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["python", '
        '"/opt/triggers/healthcheck.py"]'
    ]
    assert "COPY docker/healthcheck.py /opt/triggers/healthcheck.py" in text
    assert "docker" not in (ROOT / ".dockerignore").read_text().split()


def healthcheck(**env: str) -> subprocess.CompletedProcess[str]:
    # The image's interpreter has nothing but the standard library for it: so here, with -I.
    return subprocess.run(
        [sys.executable, "-I", str(ROOT / "docker" / "healthcheck.py")],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def port_of(service: Service) -> str:
    return service.url.rsplit(":", 1)[1]


def test_the_healthcheck_finds_ingest_or_inbox_on_its_port_and_fails_when_none_answers(
    ingest: Service, inbox: Service
) -> None:
    nobody = str(processes.free_port())
    assert healthcheck(TRIGGERS_INGEST_PORT=port_of(ingest), TRIGGERS_INBOX_PORT=nobody).returncode == 0
    assert healthcheck(TRIGGERS_INGEST_PORT=nobody, TRIGGERS_INBOX_PORT=port_of(inbox)).returncode == 0
    failed = healthcheck(TRIGGERS_INGEST_PORT=nobody, TRIGGERS_INBOX_PORT=str(processes.free_port()))
    assert failed.returncode == 1
    assert f"127.0.0.1:{nobody}/status" in failed.stderr
    # A URL that answers, but not 200 with {"status": "ok"}: unhealthy.
    assert healthcheck(TRIGGERS_HEALTHCHECK_URL=f"{ingest.url}/inbox").returncode == 1
    assert healthcheck(TRIGGERS_HEALTHCHECK_URL=f"{inbox.admin_url}/status").returncode == 0
    # The writer's check is its /metrics: any 200 there.
    assert healthcheck(TRIGGERS_INGEST_PORT=nobody, TRIGGERS_INBOX_PORT=nobody).returncode == 1
    metrics_port = inbox.admin_url.rsplit(":", 1)[1]  # an admin listener serves /metrics like the writer's
    writer_like = healthcheck(
        TRIGGERS_INGEST_PORT=nobody, TRIGGERS_INBOX_PORT=nobody, TRIGGERS_METRICS_PORT=metrics_port
    )
    assert writer_like.returncode == 0
