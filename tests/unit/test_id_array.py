"""Job ids packed as PostgreSQL's binary bigint[]: pure logic, checked by decoding."""

from __future__ import annotations

import struct

import pytest

from airflow_graphile.hooks.id_array import pack


def _decode(data: bytes) -> list[int]:
    ndim, has_null, oid = struct.unpack_from(">iiI", data)
    assert (has_null, oid) == (0, 20)
    if ndim == 0:
        return []
    size, lower = struct.unpack_from(">ii", data, 12)
    assert (ndim, lower) == (1, 1)
    values = []
    for i in range(size):
        length, value = struct.unpack_from(">iq", data, 20 + 12 * i)
        assert length == 8
        values.append(value)
    return values


@pytest.mark.parametrize(
    "ids", [[], [1], [2**63 - 1, 1, 2**32, 2**32 - 1, 2**31, 255, 256], list(range(1, 5001))]
)
def test_round_trip(ids: list[int]) -> None:
    assert _decode(pack(ids)) == ids
