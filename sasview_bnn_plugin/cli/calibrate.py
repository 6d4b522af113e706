"""``sasview-bnn calibrate``: calibrate the novelty p-values (and prediction sets) to one instrument.

Classifies every curve of the given files and folders -- an instrument's
ordinary, known-good curves, say 50 to 500 -- and writes their calibration
file (:mod:`sasview_bnn_plugin.model.calibration`): the sorted novelty scores that
replace the model's own reference in the p-values, and with ``--labels`` the
prediction-set thresholds recalibrated on their true classes. Use it with
``classify --calibration FILE``, ``watch --calibration FILE``,
``BNNClassifier(..., calibration=FILE)`` or the SasView preference.

Exit codes: 0 the calibration file was written (refused curves are listed on
standard error, not used), 2 usage error (missing path, unusable model or
labels file, no curve could be classified, output not writable).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..model.calibration import DEFAULT_SET_LEVEL, RECOMMENDED_MIN_CURVES, CalibrationError, InstrumentCalibration, LabelTable, calibrate_results
from .classify import _batches, open_classifier
from .options import add_input_options, add_output_option, add_q_unit_option, add_session_options
from .command_line import UsageError
from ..io.loading import CurveLoader, find_data_files
from ..core.result import level_text

#: Refused curves listed one by one on standard error (all are in the file).
LISTED_REFUSALS = 20


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``calibrate`` sub-command."""
    parser = subparsers.add_parser(
        "calibrate",
        help="calibrate novelty p-values (and prediction sets) to your instrument's ordinary curves",
        description="Classify your instrument's ordinary, known-good curves (say 50 to 500) and write a calibration "
        "file: their novelty scores become the reference of the novelty p-values, so that at level P about a "
        "fraction P of such curves is flagged novel on your instrument. With --labels (their true classes) the "
        "prediction-set thresholds are recalibrated too. Use the file with classify/watch --calibration FILE.",
        epilog="The file names the model and its weights' sha256; it is refused for any other model. Curves the "
        "runtime refuses are counted and listed, not used. p-values cannot go below 1/(n+1) with n curves. "
        "exit status: 0 calibration written, 2 usage error, unusable model or labels, or no usable curve",
    )
    add_input_options(parser, "DIR", "folders (or files) of ordinary curves from one instrument")
    add_output_option(parser, "FILE.json", "the calibration file to write", required=True, type=Path, default=None)
    parser.add_argument("--labels", type=Path, metavar="LABELS.csv",
                        help="CSV with columns file,dataset,label: the true class of curves (file relative to the CSV's folder, "
                        "empty dataset: every curve of the file); recalibrates the prediction-set thresholds at the model's levels")
    add_session_options(parser, batch_help="curves per model call (default 256)")
    add_q_unit_option(parser, "unit of q for files that give none, as for classify (use the same setting when classifying)")
    parser.set_defaults(run=run, novelty_threshold=None, novelty_level=None, set_level=None, calibration=None)


def run(args: argparse.Namespace) -> int:
    """Classify the curves and write the calibration; 0 when written."""
    output: Path = args.output
    if output.is_dir():
        raise UsageError(f"{output} is a folder; give the calibration file to write, e.g. {output / 'my_instrument.json'}")
    if not output.parent.is_dir() and str(output.parent):
        raise UsageError(f"the folder of {output} does not exist")
    files, missing = find_data_files(args.paths, args.recursive)
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    if not files:
        raise UsageError("no data files found in " + ", ".join(args.paths) + ("" if args.recursive else " (use -r for sub-folders)"))
    labels = None
    if args.labels is not None:
        try:
            labels = LabelTable.read(args.labels)
        except CalibrationError as err:
            raise UsageError(str(err)) from None
    source, classifier, host = open_classifier(args)
    results = []
    for batch in _batches(CurveLoader(), files, args.batch_size, len(files) > 5, set()):
        results.extend(classifier.classify(batch))
    conformal = classifier.optional_parts.conformal
    try:
        calibration = calibrate_results(
            results,
            classifier.metadata,
            source.name,
            labels=labels,
            set_levels=sorted(conformal.levels, key=float) if conformal is not None else None,
            default_set_level=conformal.default_level if conformal is not None else DEFAULT_SET_LEVEL,
            sources=[str(Path(p).resolve()) for p in args.paths],
            labels_source=str(args.labels.resolve()) if args.labels is not None else "",
        )
    except CalibrationError as err:
        raise UsageError(f"{err} (see 'sasview-bnn classify' for the reasons)") from None
    try:
        calibration.save(output)
    except OSError as err:
        raise UsageError(f"cannot write {output}: {err.strerror or err}") from None
    for line in report(calibration, labels):
        print(f"sasview-bnn: {line}", file=sys.stderr)
    for problem in host.problems:
        print(f"sasview-bnn: warning: {problem}", file=sys.stderr)
    return 0


def report(calibration: InstrumentCalibration, labels: LabelTable | None = None) -> list[str]:
    """What calibrate says about the file it wrote: counts, the model's rule on these curves, warnings."""
    n = calibration.n
    lines = [f"calibration of {calibration.model_name} on {n} curve(s) written to {calibration.path}"]
    if calibration.refused:
        lines.append(f"{calibration.n_refused} curve(s) refused and not used:")
        for row in calibration.refused[:LISTED_REFUSALS]:
            lines.append(f"  {row['file']} {row['dataset']}".rstrip() + f": {row['message']}")
        if calibration.n_refused > LISTED_REFUSALS:
            lines.append(f"  ... and {calibration.n_refused - LISTED_REFUSALS} more (all are listed in the file)")
    rule = calibration.model_rule or {}
    if rule:
        lines.append(f"the model's own rule ({rule['rule']}) flags {rule['flagged']} of these {n} curves as novel "
                     f"({100 * rule['fraction']:.1f} %): its false-alarm rate on this instrument before calibration")
    lines.append(f"novelty p-values against this calibration cannot go below 1/(n+1) = {calibration.p_value_floor:.3g}: "
                 f"a level at or below that flags nothing")
    if n < RECOMMENDED_MIN_CURVES:
        lines.append(f"warning: only {n} curve(s); at least {RECOMMENDED_MIN_CURVES} are recommended (the p-values are coarse "
                     "and the false-alarm rate less certain)")
    if calibration.conformal is not None:
        levels = ", ".join(f"{level_text(float(k))}: {v:.3g}" for k, v in sorted(calibration.conformal.levels.items(), key=lambda kv: float(kv[0])))
        lines.append(f"prediction-set thresholds from {calibration.conformal.n_calibration} labelled curve(s): {levels}")
    if labels is not None and calibration.labels is not None and calibration.labels["n_unlabelled"]:
        lines.append(f"{calibration.labels['n_unlabelled']} curve(s) have no row in the labels file (used for the p-values only)")
    if labels is not None and labels.n_unused:
        lines.append(f"{labels.n_unused} row(s) of the labels file match no classified curve")
    for note in calibration.notes:
        if not note.startswith("only "):
            lines.append(f"note: {note}")
    return lines
