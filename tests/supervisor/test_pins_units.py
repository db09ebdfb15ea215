"""Unit tests of supervisor/pins.py: the hash runs off the loop, the cache cannot be fooled
by a kept mtime and size, and a damaged pin file fails closed."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from toru.supervisor.pins import BinaryHasher, PinStore


def test_hashing_leaves_the_loop_free(tmp_path: Path) -> None:
    big = tmp_path / "big.binary"
    big.write_bytes(os.urandom(1 << 20) * 50)  # 50 MB
    ticks = 0

    async def main() -> str:
        nonlocal ticks
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)  # the ticker is running
        before = ticks
        digest = await BinaryHasher().hash(big)
        ticks -= before
        done.set()
        await task
        return digest

    assert asyncio.run(main()) == hashlib.sha256(big.read_bytes()).hexdigest()
    assert ticks > 0  # the loop ran other work while the file was hashed


def test_a_forged_mtime_and_size_do_not_hide_a_change(tmp_path: Path) -> None:
    f = tmp_path / "p.binary"
    f.write_bytes(b"A" * 4096)
    st = f.stat()
    hasher = BinaryHasher()
    first = asyncio.run(hasher.hash(f))
    f.write_bytes(b"B" * 4096)  # same inode, same size...
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # ...and the old mtime
    assert asyncio.run(hasher.hash(f)) == hashlib.sha256(b"B" * 4096).hexdigest() != first


def test_a_damaged_pin_file_pins_nothing(tmp_path: Path) -> None:
    path = tmp_path / "binary-pins.json"
    store = PinStore(path)
    assert store.adopting  # no file: an older home
    store.set("alpha", "ab" * 32, "alpha.binary", "enable")
    assert PinStore(path).check("alpha", "ab" * 32, "alpha.binary") is None
    path.write_text('{"pins": {"alpha": ')  # truncated
    damaged = PinStore(path)
    assert damaged.load_error and not damaged.adopting
    change = damaged.check("alpha", "ab" * 32, "alpha.binary")
    assert change is not None and change.pinned is None


def test_an_install_whose_rename_fails_puts_the_old_pin_back(tmp_path: Path) -> None:
    from toru.supervisor.install import Prepared, commit
    from toru_plugin_api.messages import PluginMetadata

    store = PinStore(tmp_path / "binary-pins.json")
    store.set("alpha", "01" * 32, "alpha.binary", "enable")
    meta = PluginMetadata.from_json(
        {"id": "alpha", "name": "A", "version": "2", "icon": "", "route": "/alpha"}
    )
    gone = Prepared(tmp_path / "plugins" / ".install-x.tmp", "02" * 32, meta)  # vanished
    (tmp_path / "plugins").mkdir()
    try:
        commit(gone, tmp_path / "plugins", store)
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("the rename of a missing stage must fail")
    assert PinStore(store.path).get("alpha").sha256 == "01" * 32
