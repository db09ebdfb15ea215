"""``toru plugin new NAME [--lang python|node|rust] [--dir D]``: a plugin that works as made.

Each language gets a plugin with metadata, one counter route that uses the host's KV store,
a UI bundle, a test the author can run, a build script that writes ``<id>.binary``, and a
README. The templates live in ``templates/<lang>/`` (``templates/common/`` holds what every
language shares); ``{{placeholders}}`` in file contents and ``__pkg__`` in paths are filled
from the plugin id. Python uses the SDK; node and rust use their standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from toru_plugin_api.messages import ID_RE

__all__ = ["LANGS", "Names", "cli", "create"]

LANGS = ("python", "node", "rust")
TEMPLATES = Path(__file__).resolve().parent / "templates"
# Where the shared UI bundle goes in each language's layout.
BUNDLE_PATH = {"python": "__pkg__/bundle.js", "node": "bundle.js", "rust": "src/bundle.js"}
BUILD_SCRIPTS = ("build.py", "build.js", "build.sh")  # made executable
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class Language:
    """What differs between languages in the shared README and in the CLI's hints."""

    language: str
    build: str
    test: str
    requirements: str
    files: tuple[tuple[str, str], ...]
    config_note: str = ""


LANGUAGES = {
    "python": Language(
        "Python, with the SDK `toru_plugin_api` (standard library only)",
        "python build.py",
        "python -m unittest -v",
        "Run these with the Python that has Toru installed (in a Toru checkout `.venv/bin/python`);"
        " the built zipapp carries the SDK and runs with any `python3` 3.11+.",
        (
            ("{{pkg}}/plugin.py", "the plugin: metadata, `GET /`, `POST /count`"),
            ("{{pkg}}/bundle.js", "its page in the web UI"),
            ("__main__.py", "the zipapp's entry point"),
            ("build.py", "builds `{{id}}.binary` (plugin + SDK in one file)"),
            ("test_plugin.py", "tests over the real socket with `toru_plugin_api.testing`"),
        ),
        "; the SDK gives it to you as `ctx.config`",
    ),
    "node": Language(
        "Node.js, standard library only, written against PROTOCOL.md",
        "node build.js",
        "node test.js",
        "Needs Node.js 18+ and no packages.",
        (
            ("plugin.js", "the plugin: framing, init, http routes, the TORU_KV_FD store client"),
            ("bundle.js", "its page in the web UI (built into the binary)"),
            ("build.js", "builds `{{id}}.binary` (plugin.js + bundle, node shebang)"),
            ("test.js", "protocol-level tests: socket, init, requests, a stand-in KV host"),
        ),
    ),
    "rust": Language(
        "Rust, standard library only (no crates), written against PROTOCOL.md",
        "./build.sh",
        "cargo test --offline",
        "Needs cargo; it builds offline, with no crates.",
        (
            ("src/main.rs", "the plugin: routes, the TORU_KV_FD store client, the server"),
            ("src/protocol.rs", "framing and messages"),
            ("src/json.rs", "a small JSON parser and writer"),
            ("src/bundle.js", "its page in the web UI (compiled in)"),
            ("build.sh", "builds `{{id}}.binary` (cargo build --release --offline)"),
            (
                "tests/protocol.rs",
                "protocol-level tests: socket, init, requests, a stand-in KV host",
            ),
        ),
    ),
}


@dataclass(frozen=True)
class Names:
    """Every spelling of the plugin's name that a template needs."""

    id: str
    name: str  # human, for the UI
    route: str
    pkg: str  # Python package
    cls: str  # Python class
    crate: str  # Cargo package and binary
    crate_ident: str  # the crate as a Rust identifier

    @classmethod
    def from_id(cls, plugin_id: str) -> Names:
        """Raises ``ValueError`` quoting an id the host would refuse."""
        if not ID_RE.match(plugin_id):
            raise ValueError(
                f"{plugin_id!r} is not a valid plugin id: use letters, digits and '-', "
                "starting with a letter or digit, at most 64 characters (e.g. 'disk-usage')"
            )
        words = [w for w in plugin_id.split("-") if w]
        snake = "_".join(words).lower()
        lead = "" if snake[0].isalpha() else "p"
        crate = ("plugin-" if not plugin_id[0].isalpha() else "") + plugin_id.lower()
        return cls(
            id=plugin_id,
            name=" ".join(w[:1].upper() + w[1:] for w in words),
            route="/" + plugin_id.lower(),
            pkg=f"{lead}{snake}_plugin",
            cls=(lead.upper() + "".join(w[:1].upper() + w[1:] for w in words)) + "Plugin",
            crate=crate,
            crate_ident=crate.replace("-", "_"),
        )

    def fill(self, text: str, lang: str) -> str:
        """``text`` with every ``{{placeholder}}`` replaced (an unknown one is a bug)."""
        info = LANGUAGES[lang]
        rows = "\n".join(f"| `{f}` | {what} |" for f, what in info.files)
        values = {
            **asdict(self),
            "class": self.cls,
            "lang": lang,
            "language": info.language,
            "build": info.build,
            "test": info.test,
            "requirements": info.requirements,
            "config_note": info.config_note,
            "files": "| file | what |\n|---|---|\n" + rows,
        }
        once = _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], once)  # names inside "files"


def _sources(lang: str) -> list[tuple[Path, str]]:
    """``(template file, relative output path)`` for a language, the shared files included."""
    out = []
    root = TEMPLATES / lang
    for src in sorted(root.rglob("*.tmpl")):
        out.append((src, str(src.relative_to(root))[: -len(".tmpl")]))
    out.append((TEMPLATES / "common" / "bundle.js.tmpl", BUNDLE_PATH[lang]))
    out.append((TEMPLATES / "common" / "README.md.tmpl", "README.md"))
    return out


def create(plugin_id: str, lang: str, dest: Path) -> list[Path]:
    """Write the plugin directory ``dest``; returns the files written.

    Refuses a ``dest`` that exists and is not empty (nothing of the author's is overwritten).
    """
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}: choose one of {', '.join(LANGS)}")
    names = Names.from_id(plugin_id)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"{dest} already exists and is not empty: choose another --dir")
    written = []
    for src, rel in _sources(lang):
        target = dest / rel.replace("__pkg__", names.pkg)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(names.fill(src.read_text("utf-8"), lang), "utf-8")
        if target.name in BUILD_SCRIPTS:
            target.chmod(0o755)
        written.append(target)
    return written


def cli(args: argparse.Namespace) -> int:
    """``toru plugin new``: create the directory and say what to run next."""
    dest = Path(args.dir) if args.dir else Path(args.name)
    try:
        create(args.name, args.lang, dest)
    except ValueError as exc:
        print(f"toru plugin new: {exc}", file=sys.stderr)
        return 2
    info = LANGUAGES[args.lang]
    print(f"created {dest}/ ({args.lang} plugin {args.name!r}). Next:")
    print(f"  cd {dest}")
    print(f"  {info.build:<28} # -> {args.name}.binary")
    print(f"  toru plugin check ./{args.name}.binary")
    print(f"  {info.test:<28} # its tests")
    print("  toru plugin dev .            # rebuild and restart on every change")
    return 0
