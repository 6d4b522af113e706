"""The project's optional extras, named in one place (messages of the CLI, the GUI launcher, the Bluesky callback)."""

from __future__ import annotations

#: Top-level packages of this project: a missing module of these is a bug, not a missing extra.
OWN_PACKAGES = ("sasview_bnn_plugin", "sasview_bnn_trainer")


def extra_install_hint(extra: str) -> str:
    """How to install an optional extra (sasview-bnn is installed from a clone, not from a package registry)."""
    return f'install the [{extra}] extra: in your sasview-bnn clone, run pip install -e ".[{extra}]"'
