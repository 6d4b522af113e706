"""``python -m sasview_bnn_plugin.gui``: start SasView with the sasview-bnn integration."""

import sys

from .launch import main

sys.exit(main())
