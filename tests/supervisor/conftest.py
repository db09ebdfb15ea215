"""The supervisor tier's home: a short fresh directory whose leftover processes are killed."""

from __future__ import annotations

import pytest

from .helpers import kill_leftovers


@pytest.fixture
def home(short_home):
    yield short_home
    kill_leftovers(short_home)
