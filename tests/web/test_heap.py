"""The serving processes freeze their start-up heap (toru_plugin_api/heap.py), so a full GC
mid-request walks only what requests allocated: the gen2 pauses of 170-340 ms under load
were the p99. In-process checks of the two entry points that do it; the supervisor calls the
same function once its control socket is up (toru/supervisor/main.py)."""

from __future__ import annotations

import gc

import pytest

from tests.sdk.sdk_plugins import SlowFast
from toru.wsgi import LazyApplication
from toru_plugin_api.testing import PluginHarness


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process keeps collecting everything


def test_a_web_worker_freezes_its_heap_once_the_app_is_built(unfrozen, tmp_path, monkeypatch):
    monkeypatch.setenv("TORU_HOME", str(tmp_path))
    built = LazyApplication(lambda config: object())
    assert gc.get_freeze_count() == 0
    built.build()
    assert gc.get_freeze_count() > 0


def test_an_sdk_plugin_freezes_its_heap_after_init(unfrozen):
    with PluginHarness.in_process(SlowFast()) as h:
        assert h.request("GET", "/whoami").json()["inits"] == 1
        assert gc.get_freeze_count() > 0
