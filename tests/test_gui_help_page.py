"""The BNN Anomaly perspective's help page ships with the package and explains every column (no Qt needed).

The GUI's table columns are read from ``results_table.py`` without importing it
(it needs PySide6), so this runs wherever the runtime runs.
"""

from __future__ import annotations

import ast
import tomllib
from html.parser import HTMLParser
from pathlib import Path

from sasview_bnn_plugin.gui import HELP_PAGE

ROOT = Path(__file__).resolve().parents[1]
GUI = ROOT / "sasview_bnn_plugin" / "gui"


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])

    def handle_data(self, data):
        self.parts.append(data)


def page_text() -> _Text:
    parser = _Text()
    parser.feed(HELP_PAGE.read_text(encoding="utf-8"))
    parser.close()
    return parser


def gui_columns() -> tuple[str, ...]:
    """``COLUMNS`` of results_table.py, evaluated from its source (PLAUSIBLE_COLUMN resolved)."""
    tree = ast.parse((GUI / "results_table.py").read_text(encoding="utf-8"))
    constants: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name) and target.id in ("PLAUSIBLE_COLUMN", "COLUMNS"):
                value = node.value
                if isinstance(value, ast.Tuple):
                    constants[target.id] = tuple(
                        constants[e.id] if isinstance(e, ast.Name) else ast.literal_eval(e) for e in value.elts)
                else:
                    constants[target.id] = ast.literal_eval(value)
    return constants["COLUMNS"]  # type: ignore[return-value]


def test_the_help_page_is_in_the_package_and_declared_as_package_data():
    assert HELP_PAGE.is_file() and HELP_PAGE.parent.parent == GUI
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert any(HELP_PAGE.match(pattern) for pattern in package_data["sasview_bnn_plugin.gui"])


def test_the_help_page_names_every_column_of_the_table():
    text = " ".join(" ".join(page_text().parts).split())
    columns = gui_columns()
    assert "Label" in columns and "Plausible (90 %)" in columns  # the parse found the real tuple
    for column in columns:
        assert column in text, column


def test_the_help_page_explains_the_csv_columns_uncertainty_novelty_and_the_model_card():
    text = " ".join(" ".join(page_text().parts).split())
    for column in ("label", "confidence", "anomalies_present", "prediction_set", "novelty_p_value", "is_novel",
                   "mutual_information", "novelty_score"):
        assert f"{column}" in text, column
    for phrase in ("prediction set", "90 % coverage", "posterior standard deviation", "5th to the 95th percentile",
                   "Mutual information", "novelty p-value", "calibration curves", "Calibrate per instrument",
                   "model card", "sasview-bnn models", "Preferences → BNN Anomaly"):
        assert phrase in text, phrase


def test_the_help_pages_internal_links_resolve():
    parsed = page_text()
    internal = [link[1:] for link in parsed.links if link.startswith("#")]
    assert internal and set(internal) <= parsed.ids


def test_the_perspectives_help_button_opens_this_page():
    source = (GUI / "perspective.py").read_text(encoding="utf-8")
    assert "self.cmdHelp.clicked.connect(self.show_help)" in source
    assert "QUrl.fromLocalFile(str(HELP_PAGE))" in source
