"""``sasview-bnn-train simulate``: labelled curves into one HDF5 file, on Dask."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES

from sasview_bnn_plugin.cli.command_line import UsageError

DESCRIPTION = """\
Simulate N labelled SAS curves, balanced over the chosen classes, into one HDF5
file (read it with sasview_bnn_trainer.simulation.store.CurveReader). The output
depends only on --n, --seed, the classes and the simulator's code: any number
of workers, any scheduler, any chunk size gives the same curves. Work is cut
into chunks stored in OUT.parts/ while running (about 1.5x the final file's
size, removed at the end); an interrupted run continues with --resume.
"""

EPILOG = f"""\
classes: {', '.join(CLASS_NAMES)}

examples:
  sasview-bnn-train simulate --n 100000 --out train.h5 --seed 1 --workers 2 --preview sheet.png
  sasview-bnn-train simulate --n 50000 --out no_ordered.h5 --seed 2 --exclude-class ordered
  sasview-bnn-train simulate --n 1000000 --out big.h5 --seed 3 --scheduler tcp://10.0.0.5:8786
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``simulate`` sub-command."""
    from .simulation.runner import DEFAULT_CHUNK_SIZE

    p = subparsers.add_parser(
        "simulate",
        help="simulate labelled curves into an HDF5 file (Dask, resumable)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, required=True, metavar="N", help="number of curves to simulate")
    p.add_argument("--out", required=True, metavar="OUT.h5", help="output HDF5 file (written atomically)")
    p.add_argument("--seed", type=int, required=True, metavar="S", help="random seed (>= 0); same seed, same file")
    p.add_argument(
        "--workers", type=int, default=None, metavar="W",
        help=f"worker processes of the embedded Dask cluster, one thread each (default: CPU count, here {os.cpu_count()})",
    )
    p.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT",
        help="run on an existing Dask cluster (e.g. dask-jobqueue on SLURM/PBS) instead of an embedded one; "
        "its workers need the [train] extra installed (pip install -e \".[train]\" in a clone of sasview-bnn)",
    )
    p.add_argument("--classes", nargs="+", metavar="NAME", help="simulate only these classes (default: all 7)")
    p.add_argument(
        "--exclude-class", action="append", default=[], metavar="NAME",
        help="leave this class out (repeatable), e.g. to test novelty detection",
    )
    p.add_argument(
        "--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, metavar="C",
        help=f"curves per task and part file (default {DEFAULT_CHUNK_SIZE})",
    )
    p.add_argument("--preview", metavar="SHEET.png", help="also draw a contact sheet with 4 curves of each class")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run with the same settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(run=run)
    return p


def quiet_logging() -> None:
    """Show warnings and errors only, one line each.

    sasmodels logs through the root logger, which installs a stderr handler
    with no level; Dask's INFO messages would then flood the terminal.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("sasview-bnn-train: %(name)s: %(message)s"))
        root.addHandler(handler)
    for handler in root.handlers:
        handler.setLevel(max(handler.level, logging.WARNING))


def _curves_kept(args: argparse.Namespace) -> int:
    """Curves of an interrupted run that ``--resume`` keeps (its finished part files), so the rate counts new curves only."""
    from .simulation import runner

    try:
        plan = runner.SimulationPlan(n_curves=args.n, seed=args.seed, chunk_size=args.chunk_size,
                                     classes=runner.resolve_classes(args.classes, args.exclude_class))
    except ValueError:
        return 0  # invalid settings: simulate_to_file says so
    parts = runner.PartsFolder(Path(args.out))
    if parts.path.is_dir():
        return sum(plan.chunk_length(k) for k in range(plan.n_chunks) if parts.part(k).is_file())
    config = plan.config(runner.code_version(), runner.simulator_source_digest())
    return args.n if runner._already_done(Path(args.out), config) else 0


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns the exit code."""
    from .simulation.preview import check_image_path, write_contact_sheet
    from .simulation.runner import SimulationConfigError, SimulationError, simulate_to_file

    quiet_logging()
    if args.scheduler and args.workers is not None:
        raise UsageError("--workers sizes the embedded cluster; with --scheduler the cluster's own workers are used")
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if args.preview:
        try:
            check_image_path(args.preview)
        except ValueError as err:
            raise UsageError(str(err)) from None
    resumed = _curves_kept(args) if args.resume else 0
    start = time.perf_counter()
    try:
        out = simulate_to_file(
            args.n,
            args.out,
            args.seed,
            workers=workers,
            scheduler=args.scheduler,
            classes=args.classes,
            exclude_classes=args.exclude_class,
            chunk_size=args.chunk_size,
            resume=args.resume,
            progress=not args.no_progress,
        )
    except SimulationConfigError as err:
        raise UsageError(str(err)) from None
    except SimulationError as err:
        print(f"sasview-bnn-train: simulation failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        parts = f"{args.out}.parts"
        hint = f"; finished chunks are kept in {parts}: add --resume to continue" if os.path.isdir(parts) else ""
        print(f"sasview-bnn-train: interrupted{hint}", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - start
    made = args.n - resumed
    kept = f"; {resumed} were done before this run" if resumed else ""
    print(f"wrote {args.n} curves to {out} in {seconds:.1f} s ({made} simulated now, {made / seconds:.0f} curves/s{kept})")
    if args.preview:
        print(f"contact sheet: {write_contact_sheet(out, args.preview)}")
    return 0
