"""``toru plugin new``: every language's plugin builds, passes the checker and its own test
as generated (cargo and node build offline, no packages)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import timing
from toru.scaffold import LANGS, Names, create

from .conftest import sh

# Builds (cargo, zipapps) and a whole toru serve per test: more than the suite's 300 s on a
# loaded machine, so the budget scales like every other wait here.
pytestmark = pytest.mark.timeout(timing.scaled(400))

BUILD = {"python": "python build.py", "node": "node build.js", "rust": "./build.sh"}
TEST = {"python": "python -m unittest -v", "node": "node test.js", "rust": "cargo test --offline"}


@pytest.mark.parametrize("lang", LANGS)
def test_generated_plugin_builds_checks_and_tests_green(tmp_path: Path, lang: str) -> None:
    plugin_id = f"my-{lang}"
    made = sh(f"toru plugin new {plugin_id} --lang {lang}", tmp_path)
    assert f"toru plugin check ./{plugin_id}.binary" in made.stdout
    src = tmp_path / plugin_id
    for part in ("README.md", "bundle.js"):
        assert any(p.name == part for p in src.rglob("*")), part
    sh(BUILD[lang], src, timeout=timing.scaled(300))
    assert (src / f"{plugin_id}.binary").stat().st_mode & 0o111
    checked = sh(f"toru plugin check ./{plugin_id}.binary", src)
    assert "Result: PASS" in checked.stdout and ", 0 warnings)" in checked.stdout, checked.stdout
    sh(TEST[lang], src, timeout=timing.scaled(300))


def test_names_for_an_id_that_starts_with_a_digit() -> None:
    n = Names.from_id("1up-Counter")
    assert (n.name, n.route, n.pkg, n.cls) == (
        "1up Counter",
        "/1up-counter",
        "p1up_counter_plugin",
        "P1upCounterPlugin",
    )
    assert (n.crate, n.crate_ident) == ("plugin-1up-counter", "plugin_1up_counter")


def test_a_bad_name_is_quoted_and_explained(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'my_plugin' is not a valid plugin id: use letters"):
        create("my_plugin", "python", tmp_path / "x")
    done = sh("toru plugin new ok-name --dir .", tmp_path)  # an empty directory is fine
    assert "created ." in done.stdout


def test_an_existing_directory_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists and is not empty"):
        create("mine", "node", tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"
