"""``sasview-bnn classify``: classify data files and write one row per curve.

Exit codes: 0 every curve classified, 1 some curves refused (their rows say
why), 2 usage error (bad option, missing path, unusable model) before any
curve is classified.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Iterator

from .classifier import BNNClassifier
from .command_line import UsageError
from .curve import Curve
from .loading import CurveLoader, find_data_files
from .model_catalog import ModelNotFoundError, resolve_model
from .model_format import ModelFormatError
from .output import output_format, write_results
from .plugin_host import build_plugin_host
from .providers import PROVIDER_CHOICES
from .result import ClassificationResult

log = logging.getLogger(__name__)

#: Progress bars appear above this many files.
PROGRESS_MIN_FILES = 5


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError("must be a finite number")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``classify`` sub-command."""
    parser = subparsers.add_parser(
        "classify",
        help="classify the 1D curves in data files",
        description="Classify every 1D curve in the given files and folders (any format sasdata reads). "
        "One output row per curve; refused curves get status 'error' and the reason.",
        epilog="exit status: 0 every curve classified, 1 some curves refused (their rows say why), "
        "2 usage error or unusable model (nothing classified)",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="data files or folders")
    parser.add_argument("-r", "--recursive", action="store_true", help="also read sub-folders of folders")
    parser.add_argument("--model", metavar="NAME|FILE", help="model name (see 'sasview-bnn models') or ONNX file; default: the first model shipped with sasview-bnn")
    parser.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto", help="onnxruntime execution provider (default auto: CUDA if available)")
    parser.add_argument("--output", "-o", default="-", metavar="FILE.csv|FILE.json|-", help="where to write the results (default -: CSV on standard output)")
    parser.add_argument("--plot", metavar="DIR", type=Path, help="write one PNG per curve into DIR (needs matplotlib)")
    parser.add_argument("--batch-size", type=_positive_int, default=256, metavar="N", help="curves per model call (default 256)")
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N", help="onnxruntime intra-op threads (default: onnxruntime's choice)")
    parser.add_argument("--novelty-threshold", type=_finite_float, default=None, metavar="X", help="override the model's novelty threshold")
    parser.set_defaults(run=run)


def _batches(loader: CurveLoader, files: list[Path], batch_size: int, progress: bool) -> Iterator[list[Curve]]:
    """Curves of all files, grouped into batches of about ``batch_size``."""
    from contextlib import nullcontext

    bar = nullcontext()
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(files), unit="file", file=sys.stderr, desc="classifying")
        except ImportError:
            pass
    pending: list[Curve] = []
    with bar as pbar:
        for path in files:
            pending.extend(loader.load(path))
            if pbar is not None:
                pbar.update(1)
            while len(pending) >= batch_size:
                yield pending[:batch_size]
                pending = pending[batch_size:]
        if pending:
            yield pending


def run(args: argparse.Namespace) -> int:
    """Classify; return 0 when every curve was classified, 1 when some were refused."""
    try:
        output_format(args.output)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.plot is not None:
        from .plotting import PlottingUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except PlottingUnavailable as err:
            raise UsageError(str(err)) from None
    files, missing = find_data_files(args.paths, args.recursive)
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    if not files:
        raise UsageError("no data files found in " + ", ".join(args.paths) + (" (use --recursive for sub-folders)" if not args.recursive else ""))

    host = build_plugin_host()
    try:
        source = resolve_model(args.model, host.models())
        classifier = BNNClassifier(
            source.path,
            provider=args.provider,
            intra_op_threads=args.threads,
            novelty_threshold=args.novelty_threshold,
            batch_size=args.batch_size,
            plugin_host=host,
            name=source.name,
        )
    except (ModelNotFoundError, ModelFormatError) as err:
        raise UsageError(str(err)) from None
    log.info("model %s on %s (%s)", source.name, classifier.providers.device, classifier.providers.reason)

    results: list[ClassificationResult] = []
    for batch in _batches(CurveLoader(), files, args.batch_size, progress=len(files) > PROGRESS_MIN_FILES):
        batch_results = classifier.classify(batch)
        if args.plot is not None:
            from .plotting import plot_file_name, plot_result

            for offset, (curve, result) in enumerate(zip(batch, batch_results)):
                if curve.error is None:  # a curve that was read (classified or refused) gets a plot
                    target = args.plot / plot_file_name(result, len(results) + offset)
                    try:
                        plot_result(curve, result, classifier.config, target)
                    except OSError as err:
                        host.problems.append(f"could not write the plot {target}: {err}")
        results.extend(batch_results)

    extra = {"model": source.name, "model_path": str(source.path), "provider": classifier.providers.device}
    write_results(results, args.output, extra)
    for problem in host.problems:
        print(f"sasview-bnn: warning: {problem}", file=sys.stderr)
    failed = sum(not r.ok for r in results)
    if failed:
        print(f"sasview-bnn: {failed} of {len(results)} curve(s) could not be classified (see the status and message columns)", file=sys.stderr)
        return 1
    return 0
