"""A consumer name the schema admits is one the service accepts, and the other way round.

Schemathesis generates from the published pattern (searched, as JSON Schema does); a name it
generates and the service refuses is a schema-valid request rejected.
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from inbox_api.schemas import CONSUMER_NAME
from shared.storage.consumers import MAX_NAME_CHARS, valid_name

_SCHEMA = re.compile(CONSUMER_NAME)
_NAMEISH = st.text(alphabet="Az09_.-\n é", max_size=70)


def _schema_admits(name: str) -> bool:
    # JSON Schema's ``$`` as the schema tools read it: no trailing newline let through.
    return len(name) <= MAX_NAME_CHARS and _SCHEMA.search(name) is not None and not name.endswith("\n")


@given(_NAMEISH)
def test_the_schema_pattern_and_the_storage_rule_agree_on_every_name(name: str) -> None:
    assert _schema_admits(name) == valid_name(name)


def test_names_of_dots_only_are_outside_the_schema() -> None:
    for name in (".", "..", "." * 64):
        assert not _schema_admits(name)
        assert not valid_name(name)
    assert all(valid_name(name) for name in (".a", "a.", "-"))


def test_a_long_hostile_name_is_refused_in_linear_time() -> None:
    # An ambiguous pattern would backtrack quadratically over a run of dots.
    assert not valid_name("." * 100_000)
    assert _SCHEMA.search("." * 100_000 + "!") is None
