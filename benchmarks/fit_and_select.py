"""Traditional baseline: classify simulated test curves by fitting one sasmodels model per class and selecting by BIC.

The baseline itself (models, fitting, selection, summary) is the tested module
:mod:`sasview_bnn_trainer.baselines.fit_and_select` (``trainer/baselines/fit_and_select.py``);
this script runs it::

    python benchmarks/fit_and_select.py TEST.h5 --out DIR/ [--limit N] [--workers W] [--max-nfev N]

Writes DIR/per_curve.csv and DIR/summary.json and prints a table: accuracy,
macro-F1 and per-class recall for the BIC, AIC and chi² winners, and seconds
per curve (wall and CPU).
"""

from __future__ import annotations

import sys

from sasview_bnn_trainer.baselines.fit_and_select import main

if __name__ == "__main__":
    sys.exit(main())
