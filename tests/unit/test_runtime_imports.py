"""What the production image runs imports without the development dependencies: the image
installs the project alone (``pip install .``), and types-aiobotocore is a development
dependency, imported for type checking only (``if TYPE_CHECKING``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Every entry point of the image: the three services, the Lambda handler, the CLI.
ENTRY_POINTS = [
    "ingest_api.app",
    "inbox_api.app",
    "writer_worker.main",
    "writer_worker.lambda_handler",
    "shared.ops.cli",
]
DEVELOPMENT_ONLY = ["types_aiobotocore", "types_aiobotocore_sqs", "types_aiobotocore_dynamodb"]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_an_entry_point_imports_without_types_aiobotocore(module: str) -> None:
    # A module set to None in sys.modules cannot be imported: as if it were not installed.
    code = f"import sys; sys.modules.update(dict.fromkeys({DEVELOPMENT_ONLY!r})); import {module}"
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
