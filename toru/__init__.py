"""Toru: a process-isolated plugin host."""

__version__ = "0.1.0"
