"""The plugin supervisor: one asyncio process that owns every plugin's life.

Modules by role: ``states`` (the state machine's table), ``restart_policy``, ``discovery``,
``process`` (spawn/kill/exit of one OS process), ``connection`` (the persistent plugin
connection), ``kv_channel`` (plugin -> host KV), ``supervised`` (one plugin's lifecycle),
``supervisor`` (the registry and operations), ``control_server`` / ``client`` (the control
protocol, both ends), ``logs``, ``metrics``, ``plugin_state_file``, ``supervisor_state``
(what survives a supervisor restart), ``main``.
"""
