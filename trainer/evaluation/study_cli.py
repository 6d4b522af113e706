"""The one command line of the held-out studies (leave-one-class-out, leave-family-out): runs in, OUT.json and OUT.md out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable


def study_main(argv: list[str] | None, *, description: str, runs_help: str,
               study_run: Callable[..., dict[str, Any] | list[dict[str, Any]]], markdown_table: Callable[[list[dict[str, Any]]], str]) -> int:
    """Parse ``RUN... --test TEST.h5 --out STEM [--samples S]``, run ``study_run`` per run, write and print the table.

    ``study_run`` gives one row per run, or a list of rows (a run that left out several things).
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("runs", nargs="+", help=runs_help)
    p.add_argument("--test", required=True, help="simulated test curve file (unseen seed)")
    p.add_argument("--out", required=True, help="output stem: writes OUT.json and OUT.md")
    p.add_argument("--samples", type=int, default=8, help="posterior samples (default 8)")
    args = p.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for run in args.runs:
        result = study_run(run, args.test, n_samples=args.samples)
        rows.extend(result if isinstance(result, list) else [result])
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    out.with_suffix(".md").write_text(markdown_table(rows) + "\n")
    print(markdown_table(rows))
    return 0
