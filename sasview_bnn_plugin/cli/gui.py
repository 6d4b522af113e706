"""``sasview-bnn gui``: start the real SasView with the sasview-bnn plugins attached."""

from ..gui.launch import add_parser  # noqa: F401  (registers the sub-command)
