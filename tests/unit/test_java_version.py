"""`triggers up` falls back to moto when the machine's Java is too old for DynamoDB Local:
reading the major version from what each kind of JVM prints for ``java -version``."""

from __future__ import annotations

import pytest

from shared.local.dynamodb_local import java_major


@pytest.mark.parametrize(
    ("printed", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment (build 17.0.15+6-Debian-1deb12u1)', 17),
        ('java version "1.8.0_392"\nJava(TM) SE Runtime Environment (build 1.8.0_392-b08)', 8),
        ('openjdk version "11.0.21" 2023-10-17', 11),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "22-ea" 2024-03-19', 22),
        ("Error: could not find libjava.so", None),
    ],
)
def test_the_major_version_of_each_kind_of_jvm(printed: str, major: int | None) -> None:
    assert java_major(printed) == major
