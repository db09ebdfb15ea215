"""``POST /api/plugins/install`` (admin): a multipart upload of a plugin binary.

The worker streams the ``file`` part in chunks into a staged file inside ``plugins/``
(supervisor/install.py: a name discovery ignores), never holding the binary in memory; the
supervisor's ``install`` control op then checks, pins and renames it, exactly as
``toru plugins install PATH`` does. Binaries can exceed the API's JSON body limit, so the
upload has its own limit (``plugins.install_max_bytes``, 413 beyond) and, instead of one
deadline for the whole body, a deadline per chunk (``http.client_timeout``: a stalled client
gets 408, a slow but steady one may take as long as it needs).

Form fields: ``file`` (required, the executable), ``enable`` (``true``/``false``, default
false: a new plugin stays disabled until enabled, as for every newly found plugin).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import falcon
import falcon.asgi

from ..config import Config
from ..errors import BadRequest, PayloadTooLarge, ToruError
from ..supervisor.install import new_stage
from .control import Control
from .http import send_json

FORM_OVERHEAD = 64 * 1024  # headers and small fields beside the file part
BOOLS = {"true": True, "1": True, "on": True, "false": False, "0": False, "off": False, "": False}


class InstallResource:
    auth = "admin"

    def __init__(self, control: Control, config: Config) -> None:
        self.control = control
        self.plugins_dir = config.plugins_dir
        self.max_bytes = config.install_max_bytes
        self.chunk_timeout = config.client_timeout
        # the supervisor runs --metadata, then starts (or restarts) the plugin
        self.timeout = 30.0 + 2 * config.metadata_timeout + config.start_timeout

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if not (req.content_type or "").startswith("multipart/form-data"):
            raise BadRequest(
                'send the binary as multipart/form-data with a file part named "file"',
                code="bad_upload",
            )
        length = req.content_length
        if length is not None and length > self.max_bytes + FORM_OVERHEAD:
            raise PayloadTooLarge(self._too_large(length))
        fd, staged = new_stage(self.plugins_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                enable = await self._receive(req, out)
            args = {"path": str(staged), "enable": enable, "uploaded": True}
            result = await self.control.call("install", args, self.timeout)
        finally:
            staged.unlink(missing_ok=True)  # renamed into place, or refused
        send_json(resp, result)

    def _too_large(self, size: int) -> str:
        return (
            f"the upload of {size} bytes exceeds plugins.install_max_bytes"
            f" ({self.max_bytes} bytes; TORU_INSTALL_MAX_BYTES)"
        )

    async def _receive(self, req: falcon.asgi.Request, out: Any) -> bool:
        """Write the ``file`` part to ``out``; the ``enable`` field's value."""
        enable, got_file = False, False
        try:
            form = await req.get_media()
            async for part in form:
                if part.name == "file":
                    if got_file:
                        raise BadRequest("send one file part", code="bad_upload")
                    got_file = True
                    await self._copy(part.stream, out)
                elif part.name == "enable":
                    value = (await part.get_text() or "").strip().lower()
                    if value not in BOOLS:
                        raise BadRequest("enable must be true or false", code="bad_field")
                    enable = BOOLS[value]
                else:
                    raise BadRequest(
                        f"unknown form field {part.name!r} (file, enable)", code="bad_field"
                    )
        except TimeoutError:
            raise ToruError(
                f"the upload stalled for {self.chunk_timeout:g} s",
                code="request_timeout",
                status=408,
            ) from None
        except falcon.HTTPError as exc:  # the multipart parser: a malformed form
            raise BadRequest(
                f"malformed multipart form: {exc.description or exc.title}", code="bad_upload"
            ) from None
        if not got_file:
            raise BadRequest('the form has no file part named "file"', code="bad_upload")
        out.flush()
        if out.tell() == 0:
            raise BadRequest("the uploaded file is empty", code="bad_upload")
        return enable

    async def _copy(self, stream: Any, out: Any) -> None:
        size = 0
        reader = stream.__aiter__()
        while True:
            async with asyncio.timeout(self.chunk_timeout):
                try:
                    chunk = await reader.__anext__()
                except StopAsyncIteration:
                    return
            size += len(chunk)
            if size > self.max_bytes:
                raise PayloadTooLarge(self._too_large(size))
            # NOTE: a buffered write of one chunk goes to the page cache; the supervisor
            # fsyncs the whole file once before it renames it into place.
            out.write(chunk)
