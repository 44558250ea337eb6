"""DynamoDB attribute values as msgspec Structs, so hot reads decode straight from the wire.

DynamoDB sends numbers as strings: decoders built with ``strict=False`` turn ``{"N": "5"}``
into ``NumberValue(5)``. Attributes a Struct does not name are skipped while decoding.
"""

from __future__ import annotations

import msgspec


class StringValue(msgspec.Struct, frozen=True, gc=False):  # gc=False: no field can hold a cycle
    S: str


class NumberValue(msgspec.Struct, frozen=True, gc=False):
    N: int


class BoolValue(msgspec.Struct, frozen=True, gc=False):
    BOOL: bool
