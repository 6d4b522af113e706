"""``sasview-bnn models``: list the available models (shipped and from plugins) with their cards."""

from __future__ import annotations

import argparse
import json
import sys

from ..model.catalog import NO_MODEL_MESSAGE
from ..plugins.host import build_plugin_host


#: What the curve counts on a card mean; the text listing labels each under the card line holding it.
COUNT_LABELS: dict[tuple[str, str], str] = {
    ("metrics", "n_validation"): "validation curves the metrics were measured on (at export: training_data's "
                                 "validation curves or a random subset of them)",
    ("metrics", "n_calibration"): "calibration curves (half of those: novelty threshold, novelty p-values, prediction sets)",
    ("training_data", "n_train"): "training curves",
    ("training_data", "n_validation"): "validation curves in training (held out of the fit)",
}


def count_labels(key: str, value: str) -> list[str]:
    """"n_validation 20000: validation curves ..." for each labelled count in a card entry holding a JSON object."""
    try:
        content = json.loads(value)
    except (TypeError, ValueError):
        return []
    if not isinstance(content, dict):
        return []
    return [f"{name} {content[name]}: {label}" for (where, name), label in COUNT_LABELS.items() if where == key and name in content]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``models`` sub-command."""
    parser = subparsers.add_parser("models", help="list the available models and their cards")
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Print every model with its card; exit 0 (also when there is none)."""
    host = build_plugin_host()
    sources = host.models()
    if args.json:
        print(json.dumps([{"name": s.name, "path": str(s.path), "from": s.provider, "card": dict(s.card)} for s in sources], indent=2))
    else:
        shipped = [s for s in sources if s.provider == "shipped"]
        default_source = shipped[0] if shipped else None
        if not shipped:
            print(NO_MODEL_MESSAGE)
        for source in sources:
            default = " (default)" if source is default_source else ""
            print(f"{source.name}{default}  [{source.provider}]  {source.path}")
            for key, value in source.card.items():
                print(f"    {key}: {value}")
                for line in count_labels(key, value):
                    print(f"        {line}")
    for problem in host.problems:
        print(f"sasview-bnn: warning: {problem}", file=sys.stderr)
    return 0
