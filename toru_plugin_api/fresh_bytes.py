"""``fresh_bytes(size)``: a new ``bytes`` object and a writable view of its storage, to
receive a big body straight into the object it is handed on as.

Why: a body received into a ``bytearray`` is copied once more wherever ``bytes`` is needed:
gunicorn's ASGI worker copies any ``http.response.body`` that is not ``bytes``
(``bytes(body)`` in ``ASGIProtocol``, since an app may reuse a buffer once ``send``
returns), and SDK handlers get ``req.body`` as ``bytes``. That is a copy of every 1 MiB
answer in the web worker and of every 1 MiB request body in the plugin.

How: what CPython's own ``os.read`` and ``socket.recv`` do in C. ``PyBytes_FromStringAndSize
(NULL, size)`` allocates an object whose bytes are not set yet (no zero-fill either); the
reader fills it through the view before anyone else sees the object. The caller must keep
the view to itself and hand on only the ``bytes``, once full. The object is never one of
CPython's shared singletons (those are sizes 0 and 1; this asks for at least ``MIN_SIZE``).

Where this is not CPython, or the layout check at import fails, ``fresh_bytes`` returns
None and callers receive into a ``bytearray`` as before.
"""

from __future__ import annotations

import sys

__all__ = ["MIN_SIZE", "fresh_bytes"]

MIN_SIZE = 4096


def _load():  # -> Callable[[int], tuple[bytes, memoryview]] | None
    if sys.implementation.name != "cpython":
        return None
    try:
        import ctypes

        new = ctypes.pythonapi.PyBytes_FromStringAndSize
    except (ImportError, AttributeError):
        return None
    new.restype = ctypes.py_object
    new.argtypes = (ctypes.c_char_p, ctypes.c_ssize_t)
    offset = bytes.__basicsize__ - 1  # ``ob_sval``: the bytes follow the header (+ the NUL)

    def make(size: int) -> tuple[bytes, memoryview]:
        obj = new(None, size)
        view = memoryview((ctypes.c_char * size).from_address(id(obj) + offset)).cast("B")
        return obj, view

    probe, view = make(MIN_SIZE)  # the layout is the expected one, or this is never used
    view[:] = bytes(range(256)) * (MIN_SIZE // 256)
    view.release()
    return make if probe == bytes(range(256)) * (MIN_SIZE // 256) else None


_make = _load()


def fresh_bytes(size: int) -> tuple[bytes, memoryview] | None:
    """``(obj, view)``: ``obj`` is a new ``bytes`` of ``size`` bytes (contents unset),
    ``view`` a writable ``memoryview`` of exactly its storage; None when unsupported or
    ``size < MIN_SIZE``. Fill all of ``view`` before ``obj`` leaves the caller."""
    if _make is None or size < MIN_SIZE:
        return None
    return _make(size)
