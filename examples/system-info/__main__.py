"""Zipapp entry point of the system-info example plugin."""

from system_info.plugin import SystemInfoPlugin

from toru_plugin_api import run

run(SystemInfoPlugin())
