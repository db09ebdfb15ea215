"""``fresh_bytes``: a new bytes object filled through a view of its own storage."""

from __future__ import annotations

import sys

import pytest

from toru_plugin_api.fresh_bytes import MIN_SIZE, fresh_bytes


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's bytes layout")
def test_a_fresh_bytes_object_holds_what_was_written_through_its_view():
    obj, view = fresh_bytes(MIN_SIZE + 3)
    assert type(obj) is bytes and len(obj) == len(view) == MIN_SIZE + 3
    view[:] = b"\xff\x00" * (len(view) // 2) + b"\xfe"
    assert obj == b"\xff\x00" * (len(view) // 2) + b"\xfe"
    other, other_view = fresh_bytes(MIN_SIZE + 3)
    assert other is not obj  # a new object each time, never a shared one
    other_view[:] = b"a" * len(other_view)
    assert obj[:2] == b"\xff\x00" and hash(other) == hash(b"a" * (MIN_SIZE + 3))


def test_small_sizes_are_not_made_fresh():
    assert fresh_bytes(0) is None and fresh_bytes(1) is None and fresh_bytes(MIN_SIZE - 1) is None
