"""Focused measurement tools (``python -m benchmarks.tools.<name>``); every comparison of
variants goes through ``ab.alternate`` (see benchmarks/README.md, "Tools")."""
