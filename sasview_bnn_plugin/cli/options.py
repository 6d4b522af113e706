"""The command-line options shared by ``classify``, ``watch`` and ``calibrate``, each defined once.

The argument types (:func:`positive_int`, :func:`finite_float`, ...) and the
functions that add a group of options to a sub-command's parser: the data to
read (:func:`add_input_options`), the model and its session
(:func:`add_session_options`, :func:`add_q_unit_option`, and all of them with
the novelty and set levels in :func:`add_model_options`), the results file
(:func:`add_output_option`) and the figures (:func:`add_plot_option`,
:func:`add_trend_options`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..core.q_units import q_unit_setting
from ..model.providers import PROVIDER_CHOICES


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError("must be a finite number")
    return value


def probability_level(text: str) -> str:
    """A level strictly between 0 and 1, kept as typed (a prediction-set level is matched by value)."""
    value = finite_float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1 (e.g. 0.9)")
    return text


def q_unit_choice(text: str) -> str:
    """"auto", "1/A" or "1/nm" (other spellings of the two units accepted)."""
    try:
        return q_unit_setting(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, 1/A or 1/nm, got {text!r}") from None


def add_input_options(parser: argparse.ArgumentParser, metavar: str, help: str) -> None:
    """The files and folders to read (``PATH...``) and ``-r/--recursive``."""
    parser.add_argument("paths", nargs="+", metavar=metavar, help=help)
    parser.add_argument("-r", "--recursive", action="store_true", help="also read sub-folders of folders")


def add_output_option(parser: argparse.ArgumentParser, metavar: str, help: str, **kwargs: Any) -> None:
    """``-o/--output`` (standard output by default, unless ``kwargs`` say otherwise, e.g. ``required=True``)."""
    kwargs.setdefault("default", "-")
    parser.add_argument("--output", "-o", metavar=metavar, help=help, **kwargs)


def default_model_streams() -> int:
    """The default of ``--model-streams``: 2 model calls at once (1 on one core).

    Measured on 2 cores (2026-12-08, AMD EPYC, nothing else running, 20,000 one-curve ASCII files):
    ``classify`` 2,651 curves/s end to end with two calls at once of one intra-op thread each against 2,436
    with one call of two threads, the model alone 4,571 against 4,720 curves/s (the same within the spread).
    Not measured above 2 cores, where each call gets the cores / 2 threads.
    """
    from .pipeline import available_cores

    return min(2, available_cores())


def add_session_options(parser: argparse.ArgumentParser, batch_help: str = "curves per model call and per write (default 256)") -> None:
    """``--model``, ``--provider``, ``--batch-size``, ``--threads`` and ``--model-streams``: which model, and the onnxruntime
    session running it."""
    parser.add_argument("--model", metavar="NAME|FILE", help="model name (see 'sasview-bnn models') or ONNX file; default: the first model shipped with sasview-bnn")
    parser.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto", help="onnxruntime execution provider (default auto: CUDA if available)")
    parser.add_argument("--batch-size", type=positive_int, default=256, metavar="N", help=batch_help)
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N", help="onnxruntime intra-op threads (default: onnxruntime's choice)")
    parser.add_argument("--model-streams", type=positive_int, default=None, metavar="N",
                        help="model calls run at once, each on a thread of its own (default: 2, or 1 on one core); with N > 1 "
                             "each call gets the cores / N intra-op threads unless --threads says otherwise (the same results)")


def add_q_unit_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--q-unit {auto,1/A,1/nm}``: the unit of q for files that give none."""
    parser.add_argument("--q-unit", type=q_unit_choice, default="auto", metavar="{auto,1/A,1/nm}", help=help)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options choosing and running the model (shared by ``classify`` and ``watch``)."""
    add_session_options(parser)
    novelty = parser.add_mutually_exclusive_group()
    novelty.add_argument("--novelty-threshold", type=finite_float, default=None, metavar="X",
                         help="novel when the novelty score exceeds X (overrides the model's threshold, and its p-values if it has them)")
    novelty.add_argument("--novelty-level", type=probability_level, default=None, metavar="P",
                         help="novel when the novelty p-value is below P (models with novelty calibration; default: the model's level, e.g. 0.01)")
    parser.add_argument("--set-level", type=probability_level, default=None, metavar="LEVEL",
                        help="coverage level of the conformal prediction sets, one the model exports (models with sets; default: the model's, e.g. 0.9)")
    parser.add_argument("--calibration", metavar="FILE.json", default=None,
                        help="an instrument calibration written by 'sasview-bnn calibrate' for this model: novelty p-values against "
                        "the reference of your own ordinary curves (also for a model without novelty calibration) and, if it has "
                        "them, prediction sets with its thresholds; the notes of every result name it")
    add_q_unit_option(parser, "unit of q for files that give none (plain ASCII columns, jscatter files, PDH files read as ASCII): "
                      "auto (default) decides from the q range and, when both units are plausible, keeps the reading the model "
                      "finds in-distribution; 1/A or 1/nm reads every such file in that unit. A unit the file gives is never "
                      "overridden. Every row says the unit used (column q_unit_used) and, when the file gave none, why")


def add_plot_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--plot DIR``: one PNG per curve."""
    parser.add_argument("--plot", metavar="DIR", type=Path, help=help)


def add_trend_options(parser: argparse.ArgumentParser, series: str) -> None:
    """``--trend FILE.png`` and ``--trend-x`` (shared by ``classify`` and ``watch``)."""
    parser.add_argument("--trend", metavar="FILE.png", type=Path,
                        help=f"draw the class probabilities (and anomalies present) of {series}, with their 90 %% posterior bands, "
                        "and mark the first frame from which 1 - p(clean) >= 0.5, or one anomaly's p(present) >= 0.5, for 3 "
                        "consecutive frames (needs matplotlib)")
    parser.add_argument("--trend-x", metavar="index|time|temperature|KEY", default=None,
                        help="x axis of --trend: the frame number (index, default), the measurement time or sample temperature "
                        "from the files' metadata, or any numeric metadata key; frames without it fall back to the frame number "
                        "(with a note)")
