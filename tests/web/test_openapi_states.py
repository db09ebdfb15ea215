"""The OpenAPI document names every state the API can answer (a client generated from it
must not reject a real answer)."""

from __future__ import annotations

import yaml

from tests.servers import ROOT
from toru.supervisor.states import PluginState


def test_plugin_info_state_enum_is_every_state_the_api_answers() -> None:
    doc = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    enum = doc["components"]["schemas"]["PluginInfo"]["properties"]["state"]["enum"]
    # `discovering` is not a supervision state: a binary whose --metadata has not answered
    # yet is listed with it (toru/supervisor/discovery.py)
    assert sorted(enum) == sorted({s.value for s in PluginState} | {"discovering"})
