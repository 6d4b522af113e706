"""One simulated, labelled curve as the simulator hands it to storage."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SimulatedCurve:
    """A labelled curve with everything needed to audit or regenerate it.

    Arrays have shape (points,). ``q`` and ``dq`` are in ``q_unit`` ("1/A" or
    "1/nm"); ``dq`` is the one-sigma pinhole resolution width (NaN where the
    curve is slit smeared or unsmeared); ``slit_length`` (same unit) is set for
    slit-smeared curves. ``intensity`` and ``d_intensity`` are in the curve's
    arbitrary or absolute scale (1/cm for sasmodels' default scale).

    ``params`` are the generating parameters (numbers or model names),
    ``instrument`` the instrument settings, ``criteria`` the values of the
    visibility criteria that justified the label (see ``docs/taxonomy.md``).
    """

    label: int
    q: np.ndarray
    intensity: np.ndarray
    d_intensity: np.ndarray
    dq: np.ndarray
    q_unit: str = "1/A"
    slit_length: float = float("nan")
    params: dict[str, float | str] = field(default_factory=dict)
    instrument: dict[str, float | str] = field(default_factory=dict)
    criteria: dict[str, float] = field(default_factory=dict)
