"""The "BNN Anomaly" page of SasView's Preferences dialog.

SasView 6.1 collects a perspective's ``preferences`` (a list of
``PreferencesWidget``) into its Preferences panel. Edits are *staged* through
the panel (OK/Apply enable), and because these keys are not SasView config
keys the panel calls :meth:`BNNPreferencesWidget.applyNonConfigValues` on
Apply/OK, which hands new :class:`GuiSettings` to the classification service
(saved to its JSON file).
"""

from __future__ import annotations

import math

from PySide6 import QtWidgets
from sas.qtgui.Utilities.Preferences.PreferencesWidget import PreferencesWidget

from ..model.providers import PROVIDER_CHOICES
from .classification_service import ClassificationService
from .settings import GuiSettings

DEFAULT_MODEL_ITEM = "(first shipped model)"

#: The q-unit choices as shown, and the setting each stands for (see :mod:`sasview_bnn_plugin.core.q_units`).
Q_UNIT_ITEMS: dict[str, str] = {"auto": "auto", "1/Å": "1/A", "1/nm": "1/nm"}


class BNNPreferencesWidget(PreferencesWidget):
    """Model (name or ONNX file), execution provider, novelty threshold, the q unit of files without one and the
    instrument calibration file."""

    name = "BNN Anomaly"

    def __init__(self, service: ClassificationService) -> None:
        self.service = service
        super().__init__(self.name, build_gui=True)
        self.restoreGUIValuesFromConfig()

    # -- layout ---------------------------------------------------------------------------------

    def _addAllWidgets(self) -> None:  # noqa: N802 (SasView's name)
        self.addHeaderText("Classification model (sasview-bnn)")
        self.cbModel = self.addComboBox("Model", [DEFAULT_MODEL_ITEM])
        self.txtModelFile = self.addTextInput("or ONNX model file")
        self.txtModelFile.setPlaceholderText("path to a .onnx file (overrides the model above)")
        browse = QtWidgets.QPushButton("Browse…", self)
        browse.clicked.connect(self._browse)
        self.verticalLayout.addWidget(browse)
        self.cbProvider = self.addComboBox("Execution provider", list(PROVIDER_CHOICES), "auto")
        self.txtThreshold = self.addFloatInput("Novelty threshold")
        self.txtThreshold.setPlaceholderText("empty: the model's own threshold")
        self.cbQUnit = self.addComboBox("q unit of files without one", list(Q_UNIT_ITEMS), "auto")
        self.cbQUnit.setToolTip(
            "Plain ASCII columns and PDH files give no q unit. auto: decided per curve from its q range and, "
            "when both are plausible, from the reading the model finds in-distribution (each row says which and why). "
            "A unit the file gives is always used."
        )
        self.txtCalibration = self.addTextInput("Instrument calibration file")
        self.txtCalibration.setPlaceholderText("empty: the model's own reference (write one with sasview-bnn calibrate)")
        self.txtCalibration.setToolTip(
            "A file written by 'sasview-bnn calibrate' from your instrument's ordinary curves, for this model: novelty "
            "p-values are computed against those curves (and prediction sets use its thresholds if it has them)."
        )
        browse_calibration = QtWidgets.QPushButton("Browse…", self)
        browse_calibration.clicked.connect(self._browse_calibration)
        self.verticalLayout.addWidget(browse_calibration)
        self.lblStatus = QtWidgets.QLabel(self)
        self.lblStatus.setWordWrap(True)
        self.verticalLayout.addWidget(self.lblStatus)
        self.cbModel.currentIndexChanged.connect(self._stage)
        self.txtModelFile.textChanged.connect(self._stage)
        self.cbProvider.currentIndexChanged.connect(self._stage)
        self.txtThreshold.textChanged.connect(self._stage)
        self.cbQUnit.currentIndexChanged.connect(self._stage)
        self.txtCalibration.textChanged.connect(self._stage)

    def _browse_calibration(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Choose an instrument calibration", "", "sasview-bnn calibrations (*.json)")
        if path:
            self.txtCalibration.setText(path)

    def _browse(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Choose a sasview-bnn model", "", "ONNX models (*.onnx)")
        if path:
            self.txtModelFile.setText(path)

    # -- values -----------------------------------------------------------------------------------

    def settings_from_widgets(self) -> GuiSettings:
        """The settings the widgets show (raises ValueError for an unreadable threshold)."""
        model_file = self.txtModelFile.text().strip()
        model = model_file or ("" if self.cbModel.currentText() == DEFAULT_MODEL_ITEM else self.cbModel.currentText())
        threshold_text = str(self.txtThreshold.text()).strip()
        threshold = float(threshold_text) if threshold_text else None
        if threshold is not None and not math.isfinite(threshold):
            raise ValueError("the novelty threshold must be a finite number")
        q_unit = Q_UNIT_ITEMS.get(self.cbQUnit.currentText(), "auto")
        return GuiSettings(model=model, provider=self.cbProvider.currentText(), novelty_threshold=threshold, q_unit=q_unit,
                           calibration=self.txtCalibration.text().strip())

    def _stage(self, *_args) -> None:
        if self.parent is None:  # not yet placed in the Preferences panel
            return
        try:
            settings = self.settings_from_widgets()
        except ValueError as err:
            self.lblStatus.setText(str(err))
            self._setInvalid("sasview_bnn.settings")
            return
        self.lblStatus.setText("")
        if settings == self.service.settings:
            self._unStageChange("sasview_bnn.settings")
            self.parent.unset_invalid_input("sasview_bnn.settings")
        else:
            self.parent.stageSingleChange("sasview_bnn.settings", settings.to_json())

    def applyNonConfigValues(self) -> None:  # noqa: N802 (SasView's name)
        """Called by the Preferences panel on Apply/OK: use and save the new settings."""
        try:
            settings = self.settings_from_widgets()
        except ValueError as err:
            self.lblStatus.setText(str(err))
            return
        if settings != self.service.settings:
            self.service.apply_settings(settings)
        self.lblStatus.setText(self.service.describe_model())

    def restoreDefaults(self) -> None:  # noqa: N802
        """"Restore defaults": first shipped model, automatic provider, the model's threshold, automatic q unit,
        no instrument calibration (staged)."""
        self._toggleBlockAllSignaling(True)
        self._show(GuiSettings())
        self._toggleBlockAllSignaling(False)
        self._stage()

    def _restoreFromConfig(self) -> None:  # noqa: N802
        self._show(self.service.settings)

    def _show(self, settings: GuiSettings) -> None:
        names = [source.name for source in self.service.available_models()]
        self.cbModel.clear()
        self.cbModel.addItems([DEFAULT_MODEL_ITEM] + names)
        if settings.model in names:
            self.cbModel.setCurrentIndex(1 + names.index(settings.model))
            self.txtModelFile.setText("")
        else:
            self.cbModel.setCurrentIndex(0)
            self.txtModelFile.setText(settings.model)
        self.cbProvider.setCurrentIndex(max(0, self.cbProvider.findText(settings.provider)))
        self.txtThreshold.setText("" if settings.novelty_threshold is None else repr(settings.novelty_threshold))
        shown = next((text for text, value in Q_UNIT_ITEMS.items() if value == settings.q_unit), "auto")
        self.cbQUnit.setCurrentIndex(max(0, self.cbQUnit.findText(shown)))
        self.txtCalibration.setText(settings.calibration)
        self.lblStatus.setText(self.service.describe_model())

    def _toggleBlockAllSignaling(self, toggle: bool) -> None:  # noqa: N802
        for widget in (self.cbModel, self.txtModelFile, self.cbProvider, self.txtThreshold, self.cbQUnit, self.txtCalibration):
            widget.blockSignals(toggle)
