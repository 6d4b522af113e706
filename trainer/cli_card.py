"""``sasview-bnn-train card``: write the model card (NAME.json + NAME.md) beside an exported model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "card",
        help="write the model card (NAME.json for programs, NAME.md for people) beside an exported ONNX model",
        description="Gather the model's metadata, its evaluation report on an unseen-seed test set, optional "
        "leave-one-class-out reports and a fit-and-select baseline summary into NAME.json and NAME.md next to "
        "NAME.onnx. The card records the file's sha256; the runtime refuses the model if they ever differ.",
    )
    p.add_argument("model", metavar="MODEL.onnx", help="model written by `export`")
    p.add_argument("--report", metavar="DIR/", required=True, help="`evaluate` report of the model on an unseen-seed test set")
    p.add_argument("--loco", metavar="DIR/", action="append", default=[],
                   help="`evaluate` report of a model trained without one class (repeatable, one per left-out class)")
    p.add_argument("--baseline", metavar="SUMMARY.json", help="comparison with fit-and-select (JSON; a 'table_markdown' entry is shown as is)")
    p.add_argument("--command", dest="training_command", default="", help="the recorded command that trained the model")
    p.add_argument("--timings", metavar="FILE", help="stage timings, lines of 'stage seconds' (as the training pipeline writes)")
    p.add_argument("--weaknesses", metavar="FILE.md", help="known weaknesses, one '- ' bullet per line")
    p.add_argument("--description", default="", help="one line saying what the model is")
    p.add_argument("--loco-study", metavar="STUDY.json", help="leave-one-class-out novelty study (python -m sasview_bnn_trainer.evaluation.novelty_study)")
    p.add_argument("--family-study", metavar="STUDY.json", help="leave-family-out study (python -m sasview_bnn_trainer.evaluation.family_study)")
    p.add_argument("--study-note", metavar="TEXT", default="",
                   help="where the leave-one-class-out and leave-family-out models came from, when not from this model's "
                        "own training file (e.g. an earlier simulator); shown above both study tables")
    p.add_argument("--real-data", metavar="TABLE.md", help="real-data table (scripts/real_data_table.py), shown as is")
    p.set_defaults(run=run)


def _read_json(path: str, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read the {what} {path}: {err}") from None


def run(args: argparse.Namespace) -> int:
    from .card import build_card, write_card

    try:
        test = _read_json(str(Path(args.report) / "metrics.json"), "evaluation report")
        loco = [_read_json(str(Path(d) / "metrics.json"), "leave-one-class-out report") for d in args.loco]
        baseline = _read_json(args.baseline, "baseline summary") if args.baseline else None
        timings = {}
        if args.timings:
            for line in Path(args.timings).read_text(encoding="utf-8").splitlines():
                parts = line.split()  # "fit 3125s"
                if len(parts) == 2 and parts[1].endswith("s") and parts[1][:-1].isdigit():
                    timings[parts[0]] = float(parts[1][:-1])
        weaknesses = []
        if args.weaknesses:
            weaknesses = [line[2:].strip() for line in Path(args.weaknesses).read_text(encoding="utf-8").splitlines() if line.startswith("- ")]
        study = json.loads(Path(args.loco_study).read_text(encoding="utf-8")) if args.loco_study else []
        real = Path(args.real_data).read_text(encoding="utf-8") if args.real_data else ""
        families = json.loads(Path(args.family_study).read_text(encoding="utf-8")) if args.family_study else []
        card = build_card(args.model, test, loco_metrics=loco, baseline=baseline, training_command=args.training_command,
                          stage_seconds=timings, weaknesses=weaknesses, description=args.description,
                          loco_study=study, real_data_markdown=real, family_study=families,
                          study_note=args.study_note)
        js, md = write_card(args.model, card)
    except (ValueError, OSError, KeyError) as err:
        print(f"sasview-bnn-train card: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {js} and {md} (sha256 {card['sha256'][:16]}...)")
    return 0
