"""The pluggy plugin system: hook specifications (``hookspecs``), the host that calls them (``host``)
and the runtime's own plugin (``builtin``: the shipped models). Imports ``core`` and ``model``.
"""
