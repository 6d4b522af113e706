"""``python -m sasview_bnn_plugin.cli``: the same as ``sasview-bnn``."""

import sys

from . import main

sys.exit(main())
