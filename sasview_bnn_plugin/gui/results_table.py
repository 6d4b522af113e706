"""The perspective's table of datasets and their verdicts (a Qt item model).

One :class:`DatasetEntry` per dataset sent to the perspective: its name, the
:class:`~sasview_bnn_plugin.core.curve.Curve` built from it, the Data Explorer item
it came from (to honour "delete data") and, once classified, its
:class:`~sasview_bnn_plugin.core.result.ClassificationResult`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from PySide6 import QtCore, QtGui

from ..core.curve import Curve
from ..core.result import ClassificationResult, level_text
from ..core.taxonomy import CLEAN_INDEX, CLASS_NAMES
from .summary import anomalies_present_text, percent, plain_language, plausible_text

#: The conformal prediction set's column; its header shows the level in use when it is not 90 %.
PLAUSIBLE_COLUMN = "Plausible (90 %)"
COLUMNS: tuple[str, ...] = ("Data", "Label", "Confidence", "Anomaly p", "Novel", "Anomalies present", PLAUSIBLE_COLUMN, "q-coverage", "Message")

# Colours read at a glance: green fine, amber anomaly, red novel, grey not classified.
COLOUR_CLEAN = QtGui.QColor("#c8e6c9")
COLOUR_ANOMALY = QtGui.QColor("#ffe0b2")
COLOUR_NOVEL = QtGui.QColor("#ef9a9a")
COLOUR_NOT_NOVEL = QtGui.QColor("#c8e6c9")
COLOUR_ERROR = QtGui.QColor("#e0e0e0")


@dataclass
class DatasetEntry:
    """One dataset in the perspective. ``key`` identifies its source (a Data Explorer item or data object)."""

    name: str
    curve: Curve
    key: Any = None
    data: Any = None
    result: ClassificationResult | None = None

    @property
    def pending(self) -> bool:
        return self.result is None


class ResultsTableModel(QtCore.QAbstractTableModel):
    """Rows are :class:`DatasetEntry` objects; columns are :data:`COLUMNS`."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.entries: list[DatasetEntry] = []

    # -- Qt model interface -----------------------------------------------------------------

    def rowCount(self, parent: QtCore.QModelIndex = QtCore.QModelIndex()) -> int:  # noqa: N802 (Qt name)
        return 0 if parent.isValid() else len(self.entries)

    def columnCount(self, parent: QtCore.QModelIndex = QtCore.QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: QtCore.Qt.Orientation, role: int = QtCore.Qt.DisplayRole) -> Any:  # noqa: N802
        if role == QtCore.Qt.DisplayRole and orientation == QtCore.Qt.Horizontal and 0 <= section < len(COLUMNS):
            return self.header_text(COLUMNS[section])
        return None

    def header_text(self, column: str) -> str:
        """The header shown for a column: the prediction sets' level when the results use one level other than 90 %."""
        if column != PLAUSIBLE_COLUMN:
            return column
        levels = {e.result.set_level for e in self.entries if e.result is not None and e.result.prediction_set is not None}
        if len(levels) == 1 and not math.isclose(next(iter(levels)), 0.9):
            return f"Plausible ({level_text(next(iter(levels)))})"
        return column

    def data(self, index: QtCore.QModelIndex, role: int = QtCore.Qt.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.entries):
            return None
        entry = self.entries[index.row()]
        column = COLUMNS[index.column()]
        if role == QtCore.Qt.DisplayRole:
            return self.cell_text(entry, column)
        if role == QtCore.Qt.BackgroundRole:
            return self._cell_colour(entry, column)
        if role == QtCore.Qt.ToolTipRole:
            return plain_language(entry.result) if entry.result is not None else "waiting for the model"
        return None

    # -- content ----------------------------------------------------------------------------

    @staticmethod
    def cell_text(entry: DatasetEntry, column: str) -> str:
        """The text shown in one cell."""
        result = entry.result
        if column == "Data":
            return entry.name
        if result is None:
            return "…" if column != "Message" else "classifying…"
        if column == "Message":
            return result.message
        if not result.ok:
            return "not classified" if column == "Label" else ""
        if column == "Label":
            return result.label or ""
        if column == "Confidence":
            return percent(result.confidence)
        if column == "Anomaly p":
            return percent(result.anomaly_probability)
        if column == "Novel":
            return "NOVEL" if result.is_novel else "no"
        if column == "Anomalies present":
            return anomalies_present_text(result)
        if column == PLAUSIBLE_COLUMN:
            return plausible_text(result)
        if column == "q-coverage":
            return percent(result.coverage) if math.isfinite(result.coverage) else "–"
        raise KeyError(column)

    @staticmethod
    def _cell_colour(entry: DatasetEntry, column: str) -> QtGui.QBrush | None:
        result = entry.result
        if result is None:
            return None
        if not result.ok:
            return QtGui.QBrush(COLOUR_ERROR) if column in ("Label", "Novel") else None
        if column == "Novel":
            return QtGui.QBrush(COLOUR_NOVEL if result.is_novel else COLOUR_NOT_NOVEL)
        if column == "Label":
            return QtGui.QBrush(COLOUR_CLEAN if result.label == CLASS_NAMES[CLEAN_INDEX] else COLOUR_ANOMALY)
        if column == "Anomalies present" and result.anomalies_present is not None:
            return QtGui.QBrush(COLOUR_ANOMALY if result.anomalies_present else COLOUR_CLEAN)
        return None

    def add_entries(self, entries: list[DatasetEntry]) -> None:
        """Append rows (results still pending)."""
        if not entries:
            return
        first = len(self.entries)
        self.beginInsertRows(QtCore.QModelIndex(), first, first + len(entries) - 1)
        self.entries.extend(entries)
        self.endInsertRows()

    def remove_rows(self, rows: list[int]) -> None:
        """Remove the given row numbers."""
        for row in sorted(set(rows), reverse=True):
            if 0 <= row < len(self.entries):
                self.beginRemoveRows(QtCore.QModelIndex(), row, row)
                del self.entries[row]
                self.endRemoveRows()

    def clear(self) -> None:
        self.beginResetModel()
        self.entries = []
        self.endResetModel()

    def set_result(self, entry: DatasetEntry, result: ClassificationResult) -> None:
        """Store a result and refresh its row (no-op if the entry was removed meanwhile)."""
        entry.result = result
        for row, candidate in enumerate(self.entries):
            if candidate is entry:
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))
                return

    def refresh_rows(self) -> None:
        """Redraw every row (after results were stored in the entries directly)."""
        if self.entries:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.entries) - 1, len(COLUMNS) - 1))

    def classified(self) -> list[ClassificationResult]:
        """Results of every row that has one, in table order."""
        return [e.result for e in self.entries if e.result is not None]
