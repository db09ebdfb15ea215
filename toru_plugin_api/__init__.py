"""toru_plugin_api: write a Toru plugin in Python with the standard library only.

    from toru_plugin_api import ToruPlugin, route, run

    class Hello(ToruPlugin):
        metadata = {"id": "hello", "name": "Hello", "version": "1.0.0", "icon": "👋",
                    "route": "/hello"}

        @route("GET", "/")
        async def index(self, req):
            return {"hello": "world"}

    if __name__ == "__main__":
        run(Hello())

See docs/plugins/README.md (author guide) and docs/plugins/PROTOCOL.md (wire format).
``toru_plugin_api.testing`` runs a plugin against a real socket from tests;
``python -m toru_plugin_api.check PATH`` checks an executable against the protocol.
"""

from __future__ import annotations

from .codec import FrameTooLarge, ProtocolError
from .kv import KvClient, KvStore, KvUnavailable, MemoryKv
from .log import PluginLogger
from .messages import HttpRequest, HttpResponse, KvOp, PluginError, PluginMetadata
from .plugin import PluginContext, ToruPlugin, error_response, route
from .runtime import PluginServer, run, serve

__version__ = "0.1.0"

__all__ = [
    "FrameTooLarge",
    "HttpRequest",
    "HttpResponse",
    "KvClient",
    "KvOp",
    "KvStore",
    "KvUnavailable",
    "MemoryKv",
    "PluginContext",
    "PluginError",
    "PluginLogger",
    "PluginMetadata",
    "PluginServer",
    "ProtocolError",
    "ToruPlugin",
    "__version__",
    "error_response",
    "route",
    "run",
    "serve",
]
