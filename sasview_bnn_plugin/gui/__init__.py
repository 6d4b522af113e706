"""SasView integration of sasview-bnn: the "BNN Anomaly" perspective, its Analysis-menu action and batch-grid column.

Needs SasView (the ``[gui]`` extra: ``pip install -e ".[gui]"`` in a clone). Start SasView with the
integration by ``python -m sasview_bnn_plugin.gui`` (see :mod:`.launch`).
Everything that touches SasView internals is in :mod:`.sasview_hooks`.
Importing this package imports nothing from Qt or SasView.
"""

from pathlib import Path

#: The perspective's help page (opened by its Help button), shipped as package data.
HELP_PAGE = Path(__file__).with_name("help") / "bnn_anomaly.html"
