"""triggers-client is its own distribution: installed from its directory, httpx and msgspec only."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CLIENT_DIR = Path(__file__).resolve().parents[2] / "triggers_client"


def test_it_is_installed_from_its_own_directory() -> None:
    direct_url = distribution("triggers-client").read_text("direct_url.json")
    assert direct_url is not None, "triggers-client was not installed from a local directory"
    assert json.loads(direct_url)["url"] == CLIENT_DIR.as_uri()


def test_it_depends_on_httpx_and_msgspec_only() -> None:
    assert {Requirement(r).name for r in requires("triggers-client") or []} == {"httpx", "msgspec"}
    service = {Requirement(r).name for r in requires("triggers-api") or [] if "extra ==" not in r}
    assert "triggers-client" in service


def test_importing_it_loads_only_its_dependencies() -> None:
    # What importing it adds to a bare interpreter, by distribution: only the client and the
    # closure of its requirements (httpx's optional extras included: it imports them when present).
    code = (
        "import sys; before = set(sys.modules); import triggers_client; "
        "print('\\n'.join({m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names)))"
    )
    added = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    owners = packages_distributions()
    loaded = {canonicalize_name(d) for module in added for d in owners.get(module, [module])}
    assert "triggers-client" in loaded
    assert loaded - _closure("triggers-client") == set()
    assert not loaded & {"triggers-api", "litestar", "aiobotocore", "botocore", "moto"}


def _closure(name: str) -> set[str]:
    """``name`` and every distribution its requirements reach (all extras, all markers)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = canonicalize_name(todo.pop())
        if current in seen:
            continue
        seen.add(current)
        try:
            todo += [Requirement(r).name for r in requires(current) or []]
        except PackageNotFoundError:
            continue  # an optional dependency that is not installed
    return seen
