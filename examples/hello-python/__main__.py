"""Zipapp entry point of the hello-python example plugin."""

from hello_python.plugin import HelloPlugin

from toru_plugin_api import run

run(HelloPlugin())
