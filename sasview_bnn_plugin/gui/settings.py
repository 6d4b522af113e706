"""The BNN Anomaly perspective's user settings: which model, which provider, which novelty threshold,
which q unit for files without one, which instrument calibration.

SasView's own configuration (``sas.system.config``) refuses keys it does not
know, so these settings live in their own small JSON file,
``sasview_bnn.json`` in SasView's user configuration folder (or the file
named by ``$SASVIEW_BNN_SETTINGS``). No Qt needed here.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..model.providers import PROVIDER_CHOICES
from ..core.q_units import q_unit_setting

log = logging.getLogger(__name__)

SETTINGS_FILE_NAME = "sasview_bnn.json"
SETTINGS_VARIABLE = "SASVIEW_BNN_SETTINGS"


def default_settings_path() -> Path:
    """``$SASVIEW_BNN_SETTINGS`` if set, else ``sasview_bnn.json`` in SasView's user config folder."""
    override = os.environ.get(SETTINGS_VARIABLE)
    if override:
        return Path(override)
    try:
        from sas.system.user import get_config_dir

        return Path(get_config_dir()) / SETTINGS_FILE_NAME
    except Exception:  # SasView absent or its folders unusable: fall back to the home folder
        return Path.home() / ".sasview" / SETTINGS_FILE_NAME


@dataclass
class GuiSettings:
    """What the perspective classifies with.

    ``model`` is a model name (shipped or from a plugin) or the path of an
    ONNX file; "" picks the first shipped model. ``provider`` is one of
    :data:`~sasview_bnn_plugin.model.providers.PROVIDER_CHOICES`.
    ``novelty_threshold`` overrides the model's own threshold (None keeps it).
    ``q_unit`` is the unit of q for data whose file gives none (plain ASCII
    columns, PDH files): "auto" (decided per curve from its q range and the
    model, see :mod:`sasview_bnn_plugin.core.q_units`), "1/A" or "1/nm". A unit the
    file gives is never overridden. ``calibration`` is the path of an
    instrument calibration file written by ``sasview-bnn calibrate`` for the
    model ("" for none, see :mod:`sasview_bnn_plugin.model.calibration`).
    """

    model: str = ""
    provider: str = "auto"
    novelty_threshold: float | None = None
    q_unit: str = "auto"
    calibration: str = ""
    path: Path | None = field(default=None, compare=False, repr=False)

    def validate(self) -> None:
        """Raise ValueError with a readable message when a value is unusable."""
        if self.provider not in PROVIDER_CHOICES:
            raise ValueError(f"provider must be one of {', '.join(PROVIDER_CHOICES)}, not {self.provider!r}")
        if self.novelty_threshold is not None and not math.isfinite(self.novelty_threshold):
            raise ValueError("the novelty threshold must be a finite number")
        q_unit_setting(self.q_unit)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("path")
        if not data["calibration"]:  # written only when set: files without one stay as before
            data.pop("calibration")
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_mapping(cls, data: dict[str, Any], path: Path | None = None) -> "GuiSettings":
        """Settings from a dict; unknown keys are ignored, bad values fall back to defaults."""
        settings = cls(path=path)
        model = data.get("model", "")
        settings.model = str(model) if model else ""
        provider = str(data.get("provider", "auto")).lower()
        settings.provider = provider if provider in PROVIDER_CHOICES else "auto"
        threshold = data.get("novelty_threshold")
        try:
            settings.novelty_threshold = None if threshold in (None, "") else float(threshold)
        except (TypeError, ValueError):
            settings.novelty_threshold = None
        if settings.novelty_threshold is not None and not math.isfinite(settings.novelty_threshold):
            settings.novelty_threshold = None
        try:
            settings.q_unit = q_unit_setting(data.get("q_unit"))
        except ValueError:
            settings.q_unit = "auto"
        calibration = data.get("calibration", "")
        settings.calibration = calibration.strip() if isinstance(calibration, str) else ""
        return settings

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> "GuiSettings":
        """Read the settings file; a missing or unreadable file gives the defaults (and a log line)."""
        target = Path(path) if path is not None else default_settings_path()
        if not target.is_file():
            return cls(path=target)
        try:
            data = json.loads(target.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            log.warning("BNN Anomaly settings in %s could not be read (%s); using the defaults", target, err)
            return cls(path=target)
        return cls.from_mapping(data, target)

    def save(self) -> None:
        """Write the settings to :attr:`path` (created if needed)."""
        target = self.path or default_settings_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.to_json(), encoding="utf-8")
        self.path = target
