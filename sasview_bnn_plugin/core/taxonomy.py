"""The seven classes of the anomaly taxonomy, fixed by ``docs/taxonomy.md``.

Every model, simulator, test and report uses exactly these names in this order;
the index of a name is its class label.
"""

from __future__ import annotations

from typing import NamedTuple


class AnomalyClass(NamedTuple):
    """One class of the taxonomy: its label index, name and a one-line meaning."""

    index: int
    name: str
    description: str


CLASSES: tuple[AnomalyClass, ...] = (
    AnomalyClass(0, "clean", "one dilute population: Guinier knee, form-factor decay, flat background, nothing else"),
    AnomalyClass(1, "aggregation", "large clusters or aggregates: an extra low-q power-law upturn (slope -1.5 to -4)"),
    AnomalyClass(2, "interparticle", "concentrated, interacting particles: low-q suppression and/or an S(q) correlation peak"),
    AnomalyClass(3, "ordered", "long-range order (lamellar, hexagonal, cubic): narrow Bragg peaks at lattice ratios"),
    AnomalyClass(4, "bimodal", "two populations with radii of gyration differing 3x or more: two Guinier knees"),
    AnomalyClass(5, "oversubtracted", "too much background subtracted: steep high-q fall into a run of negative intensities"),
    AnomalyClass(6, "artefact", "instrument or reduction fault: spikes, a step between detector segments, beamstop distortion"),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
N_CLASSES: int = len(CLASSES)
CLEAN_INDEX: int = 0
#: Classes 1-6: the anomalies that may be present in a curve, alone or several at once
#: (taxonomy version 2), in taxonomy order.
ANOMALY_NAMES: tuple[str, ...] = CLASS_NAMES[CLEAN_INDEX + 1 :]


def class_index(name: str) -> int:
    """Label index of a class name; raises ``ValueError`` naming the valid classes."""
    try:
        return CLASS_NAMES.index(name)
    except ValueError:
        raise ValueError(
            f"unknown class {name!r}; the classes are: {', '.join(CLASS_NAMES)}"
        ) from None


def describe(name: str) -> str:
    """One-line physical meaning of a class, for CLI and GUI text."""
    return CLASSES[class_index(name)].description
