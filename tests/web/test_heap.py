"""The serving processes freeze their start-up heap (toru_plugin_api/heap.py), so a full GC
mid-request walks only what requests allocated: gen2 collections of 91-358 ms under load
were the worst of the p99. A web worker does it once its app is built, an SDK plugin after
``init`` (in its own process, through ``run()``; never in a test process that embeds one),
the supervisor once its control socket is up (toru/supervisor/main.py)."""

from __future__ import annotations

import gc
import sys
import textwrap

import pytest

from tests import timing
from tests.sdk.sdk_plugins import SlowFast
from toru.wsgi import LazyApplication
from toru_plugin_api.testing import PluginHarness

PLUGIN = textwrap.dedent(
    """\
    #!{python}
    import gc
    import sys

    sys.path.insert(0, {root!r})
    from toru_plugin_api import ToruPlugin, route, run


    class P(ToruPlugin):
        metadata = {{"id": "frozen", "name": "f", "version": "1.0.0", "route": "/frozen"}}

        @route("GET", "/frozen")
        def frozen(self, req):
            return {{"frozen": gc.get_freeze_count()}}


    run(P())
    """
)


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


def test_an_sdk_plugin_process_freezes_its_heap_after_init(tmp_path):
    from tests.servers import ROOT

    binary = tmp_path / "frozen.binary"
    binary.write_text(PLUGIN.format(python=sys.executable, root=str(ROOT)))
    binary.chmod(0o755)
    with PluginHarness.subprocess(binary, start_timeout=timing.START) as h:
        assert h.request("GET", "/frozen").json()["frozen"] > 0


def test_a_plugin_embedded_in_a_test_does_not_freeze_the_test_process(unfrozen):
    with PluginHarness.in_process(SlowFast()) as h:
        assert h.request("GET", "/whoami").json()["inits"] == 1
        assert gc.get_freeze_count() == 0
