"""What the simulator draws for each class: one spec per class with its parameter table, like a sasmodels model module.

:mod:`.classes` builds the curves; every range it draws from is read from here.
A table lists its parameters in the order they are drawn (the instrument's and
the shapes' draws come in between where the class's code says); that order is
the order of the random numbers: changing it, or a range, changes the curves
(bump ``SIMULATOR_VERSION``). Each row says the parameter's name, its distribution
(:class:`Uniform`, :class:`LogUniform`, :class:`Integer`, :class:`Choice`,
:class:`Chance`, :class:`Fixed`), its range, its units and what it means; a row
whose value is ``relative_to`` a reference (e.g. the particle's radius) is that
reference times the draw, one ``per`` a reference is the draw divided by it.

Weighted alternatives (the aggregate models, the structure factors, the
artefact kinds, the near misses) are :class:`Option` objects, each with its own
table and its weight among the others.

Not here: the shapes of the particles (:mod:`.shapes`, their own table per
sasmodels form factor), the instrument (:mod:`.instrument`), the visibility
thresholds (:mod:`.criteria`, from ``docs/taxonomy.md``) and the structural
choices of a class (which secondary anomalies a class may carry,
:data:`.classes.SECONDARY_ANOMALIES`).

Units: "1/Å" for q, "Å" for lengths; "window" is the log-q position inside the
measured q-window (0 at q_min, 1 at q_max); "points" a fraction of the curve's points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A draw uniform in log between ``low`` and ``high`` (one ``rng.uniform`` call)."""
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


@dataclass(frozen=True)
class Parameter:
    """One row of a parameter table."""

    name: str
    units: str = ""
    description: str = ""
    #: The value is ``references[relative_to] * draw`` (e.g. a radius in units of the particle's).
    relative_to: str | None = None
    #: The value is ``draw / references[per]`` (e.g. a length in units of 1/q_min).
    per: str | None = None

    distribution = "?"

    def sample(self, rng: np.random.Generator, size: int | None = None) -> Any:
        raise NotImplementedError

    def draw(self, rng: np.random.Generator, size: int | None = None, **references: float) -> Any:
        """A value (``size`` None) or an array of ``size`` values, with :attr:`relative_to`/:attr:`per` applied."""
        value = self.sample(rng, size)
        if self.relative_to is not None:
            return references[self.relative_to] * value
        if self.per is not None:
            return value / references[self.per]
        return value

    def row(self) -> tuple[str, str, str, str, str]:
        """(name, distribution, range, units, description): the row as :func:`table_text` prints it."""
        units = self.units
        if self.relative_to is not None:
            units = f"x {self.relative_to}" + (f" ({units})" if units else "")
        if self.per is not None:
            units = f"/ {self.per}" + (f" ({units})" if units else "")
        return self.name, self.distribution, self.range_text(), units, self.description

    def range_text(self) -> str:
        return ""


@dataclass(frozen=True)
class Uniform(Parameter):
    """Uniform between ``low`` and ``high``: ``rng.uniform(low, high)``."""

    low: float = 0.0
    high: float = 1.0

    distribution = "uniform"

    def sample(self, rng: np.random.Generator, size: int | None = None) -> Any:
        values = self.generator(rng)(self.low, self.high, size)
        return float(values) if size is None else values.astype(float)

    @staticmethod
    def generator(rng: np.random.Generator) -> Any:
        """The numpy method drawing from ``low`` to ``high`` (with an optional size)."""
        return rng.uniform

    def range_text(self) -> str:
        return f"[{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class LogUniform(Uniform):
    """Uniform in log between ``low`` and ``high`` (:func:`log_uniform`)."""

    distribution = "log-uniform"

    def sample(self, rng: np.random.Generator, size: int | None = None) -> Any:
        if size is not None:
            raise ValueError(f"{self.name}: log-uniform parameters are drawn one at a time")
        return log_uniform(rng, self.low, self.high)


@dataclass(frozen=True)
class Integer(Uniform):
    """A whole number from ``low`` to ``high - 1`` (numpy's ``rng.integers(low, high)``), as a float (sasmodels takes floats)."""

    distribution = "integer"

    @staticmethod
    def generator(rng: np.random.Generator) -> Any:
        return rng.integers

    def range_text(self) -> str:
        return f"{self.low}..{self.high - 1}"


@dataclass(frozen=True)
class Choice(Parameter):
    """One of ``options`` (``rng.choice``), with probabilities ``weights`` (None: all alike)."""

    options: tuple[int, ...] = ()
    weights: tuple[float, ...] | None = None

    distribution = "choice"

    def sample(self, rng: np.random.Generator, size: int | None = None) -> Any:
        if size is not None:
            raise ValueError(f"{self.name}: choices are drawn one at a time")
        return int(rng.choice(list(self.options), p=None if self.weights is None else list(self.weights)))

    def range_text(self) -> str:
        if self.weights is None:
            return "{" + ", ".join(str(o) for o in self.options) + "}"
        return "{" + ", ".join(f"{o}: {w:g}" for o, w in zip(self.options, self.weights)) + "}"


@dataclass(frozen=True)
class Chance(Parameter):
    """True with probability ``probability`` (``rng.random() < probability``)."""

    probability: float = 0.5

    distribution = "chance"

    def sample(self, rng: np.random.Generator, size: int | None = None) -> Any:
        return rng.random() < self.probability if size is None else rng.random(size) < self.probability

    def range_text(self) -> str:
        return f"p = {self.probability:g}"


@dataclass(frozen=True)
class Fixed(Parameter):
    """Always ``value``; draws nothing."""

    value: float = 0.0

    distribution = "fixed"

    def sample(self, rng: np.random.Generator, size: int | None = None) -> Any:
        return self.value

    def range_text(self) -> str:
        return f"{self.value:g}"


@dataclass(frozen=True)
class PointRange(Uniform):
    """Where on the curve a fault may sit: points from ``low`` to ``high`` of the curve, at least ``margin`` points
    from either end (drawn by the class's code, which knows which of these points qualify: see :meth:`bounds`)."""

    margin: int = 0

    distribution = "points"

    def sample(self, rng: np.random.Generator, size: int | None = None) -> Any:
        raise TypeError(f"{self.name}: a range of points; the class's code draws a point inside bounds(n)")

    def bounds(self, n: int) -> tuple[int, int]:
        """(first, last) point index allowed on a curve of ``n`` points."""
        return max(int(self.low * n), self.margin), min(int(self.high * n), n - self.margin)

    def range_text(self) -> str:
        return f"[{self.low:g}, {self.high:g}], >= {self.margin} from the ends"


@dataclass(frozen=True)
class Table:
    """Parameters in the order they are drawn."""

    parameters: tuple[Parameter, ...] = ()

    def __post_init__(self) -> None:
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"a parameter table names a parameter twice: {names}")

    def __getitem__(self, name: str) -> Parameter:
        for parameter in self.parameters:
            if parameter.name == name:
                return parameter
        raise KeyError(f"no parameter {name!r}; the table has {', '.join(p.name for p in self.parameters)}")

    def __iter__(self):
        return iter(self.parameters)

    def draw(self, rng: np.random.Generator, **references: float) -> dict[str, Any]:
        """Every parameter, drawn in table order (one value each)."""
        return {p.name: p.draw(rng, **references) for p in self.parameters}


@dataclass(frozen=True)
class Option(Table):
    """One of several weighted alternatives (a sasmodels model, an artefact kind ...) with its own table."""

    weight: float = 1.0
    description: str = ""


@dataclass(frozen=True)
class ClassSpec(Table):
    """A class of the taxonomy: its parameter table and its weighted alternatives (``options``), if any."""

    name: str = ""
    description: str = ""
    options: Mapping[str, Option] = field(default_factory=dict)


def weights(options: Mapping[str, Option]) -> dict[str, float]:
    """name -> weight of weighted alternatives (what :func:`.classes._draw_kind` draws from)."""
    return {name: option.weight for name, option in options.items()}


def table_text(spec: Table, title: str = "") -> str:
    """The parameter table of ``spec`` (and of its options) as plain text, for documentation and audits."""
    lines = [title] if title else []
    rows = [p.row() for p in spec]
    for name, option in getattr(spec, "options", {}).items():
        rows.append((f"{name} (weight {option.weight:g})", "", "", "", option.description))
        rows.extend((f"  {p.name}", *p.row()[1:]) for p in option)
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(4)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- shared by every class

#: The overall intensity scale of a finished curve (the signal's peak is brought to this value).
INTENSITY = Table((
    LogUniform("intensity_scale", "1/cm", "the noise-free signal's maximum after scaling", low=1e-2, high=1e4),
))

#: Where the particle's Guinier knee (q ≈ 0.87/Rg) sits, unless a class says otherwise.
KNEE_POSITION = Uniform("knee_position", "window", "log-q position of the particle's Guinier knee", low=0.08, high=0.65)


# ----------------------------------------------------------------------------- aggregation

#: The sasmodels models of aggregates (low-q upturn); rg is the particle's target Rg, q_min the window's start.
AGGREGATES: dict[str, Option] = {
    "power_law": Option((
        Uniform("power", "", "Porod-like exponent of the upturn", low=1.5, high=4.0),
    ), weight=0.6, description="sasmodels power_law"),
    "mass_fractal": Option((
        Uniform("radius", "Å", "building-block radius", relative_to="rg", low=0.2, high=0.6),
        Uniform("fractal_dim_mass", "", "mass fractal dimension", low=1.6, high=3.0),
        Uniform("cutoff_length", "Å", "aggregate size", per="q_min", low=3.0, high=30.0),
    ), weight=0.2, description="sasmodels mass_fractal"),
    "surface_fractal": Option((
        Uniform("radius", "Å", "building-block radius", relative_to="rg", low=0.2, high=0.6),
        Uniform("fractal_dim_surf", "", "surface fractal dimension", low=2.0, high=2.9),
        Uniform("cutoff_length", "Å", "aggregate size", per="q_min", low=3.0, high=30.0),
    ), weight=0.2, description="sasmodels surface_fractal"),
}

AGGREGATION = ClassSpec((
    Chance("strong_upturn", "", "the upturn dominates the low-q decades (metals, cements, porous solids in "
           "USAXS: a power law over 2-3 decades above the particle's shoulder), else a plain upturn", probability=0.3),
    Uniform("knee_position", "window", "the particle's knee in the upper part of the window, room for the upturn below",
            low=0.25, high=0.7),
    Uniform("strong_knee_position", "window", "a strong upturn's particle knee, high in the window", low=0.5, high=0.85),
    LogUniform("excess_at_q_min", "x clean I(q_min)", "aggregate over clean intensity at q_min; at most what keeps "
               ">= 75 % of I at the particle's knee (the upper end is lowered to that)", low=1.2, high=199.0),
    LogUniform("strong_excess_at_q_min", "x clean I(q_min)", "a strong upturn's excess at q_min (lowered, like "
               "excess_at_q_min, to what keeps >= 75 % of I at the knee; a plain upturn when that is below the low end)",
               low=199.0, high=1e5),
), name="aggregation", description="a clean curve plus an aggregate model", options=AGGREGATES)


# ----------------------------------------------------------------------------- interparticle

#: Structure factors of concentrated particles; radius is the particle's hard-sphere (outer) radius.
STRUCTURE_FACTORS: dict[str, Option] = {
    "hardsphere": Option((
        Uniform("radius_effective", "Å", "", relative_to="radius", low=1.0, high=1.15),
        Uniform("volfraction", "", "", low=0.1, high=0.5),
    ), weight=0.35, description="repulsive: hard spheres (Percus-Yevick)"),
    "hayter_msa": Option((
        Uniform("radius_effective", "Å", "", relative_to="radius", low=1.0, high=1.1),
        Uniform("volfraction", "", "", low=0.1, high=0.4),
        Uniform("charge", "e", "", low=5.0, high=80.0),
        Fixed("temperature", "K", value=298.15),
        LogUniform("concentration_salt", "M", "low salt: the low-q turnover of a salt-free protein solution",
                   low=1e-4, high=5e-2),
        Fixed("dielectconst", "", "water", value=78.4),
    ), weight=0.3, description="repulsive: screened Coulomb (Hayter-MSA)"),
    "stickyhardsphere": Option((
        Uniform("radius_effective", "Å", "", relative_to="radius", low=1.0, high=1.1),
        Uniform("volfraction", "", "", low=0.1, high=0.35),
        Uniform("perturb", "", "", low=0.02, high=0.1),
        LogUniform("stickiness", "", "", low=0.08, high=1.0),
    ), weight=0.2, description="attractive: sticky hard spheres (Baxter)"),
    "squarewell": Option((
        Uniform("radius_effective", "Å", "", relative_to="radius", low=1.0, high=1.1),
        Uniform("volfraction", "", "", low=0.1, high=0.35),
        Uniform("welldepth", "kT", "", low=0.3, high=1.5),
        Uniform("wellwidth", "", "", low=1.05, high=1.5),
    ), weight=0.15, description="attractive: square well"),
}

INTERPARTICLE = ClassSpec((
    Uniform("knee_position", "window", "knee of a compact particle", low=0.05, high=0.55),
), name="interparticle", description="a compact particle times a structure factor", options=STRUCTURE_FACTORS)


# ----------------------------------------------------------------------------- ordered

#: Bragg peak position ratios q_hkl/q_1 of common mesophases.
LATTICES: dict[str, tuple[float, ...]] = {
    "lamellar": (1.0, 2.0, 3.0, 4.0, 5.0),
    "hexagonal": tuple(math.sqrt(x) for x in (1, 3, 4, 7, 9, 12)),
    "simple_cubic": tuple(math.sqrt(x) for x in (1, 2, 3, 4, 5, 6)),
    "bcc": tuple(math.sqrt(x / 2) for x in (2, 4, 6, 8, 10, 12)),
    "fcc": tuple(math.sqrt(x / 3) for x in (3, 4, 8, 11, 12, 16)),
    "Pn3m": tuple(math.sqrt(x / 2) for x in (2, 3, 4, 6, 8, 9)),
    "Ia3d": tuple(math.sqrt(x / 6) for x in (6, 8, 14, 16, 20, 22)),
    "Im3m": tuple(math.sqrt(x / 2) for x in (2, 4, 6, 8, 10, 12, 14, 16)),
}

_LAMELLAR_STACK = Chance("lamellar_stack", "", "a lamellar phase (sasmodels lamellar_stack_paracrystal), else "
                         "Bragg peaks on a particle", probability=0.15)

ORDERED = ClassSpec((
    LogUniform("peak_relative_sigma", "", "Gaussian sigma/q of the Bragg peaks (FWHM/q = 2.355 x)", low=0.004, high=0.02),
    Uniform("first_peak_position", "window", "log-q position of the first peak q1", low=0.08, high=0.65),
    _LAMELLAR_STACK,
), name="ordered", description="Bragg peaks of a lattice (LATTICES), or a paracrystalline lamellar stack", options={
    "lamellar_stack": Option((
        Uniform("thickness", "Å", "bilayer thickness", relative_to="d_spacing", low=0.15, high=0.6),
        Uniform("sld", "1e-6/Å²", "", low=-0.5, high=1.5),
        Uniform("sld_solvent", "1e-6/Å²", "", low=3.0, high=6.4),
        Integer("Nlayers", "", "layers in a stack", low=25, high=81),
        Uniform("sigma_d", "", "relative spread of the layer spacing (sasmodels' sigma_d)", low=0.0, high=0.05),
    ), weight=_LAMELLAR_STACK.probability, description="sasmodels lamellar_stack_paracrystal, d_spacing = 2 pi / q1"),
    "bragg_peaks": Option((
        KNEE_POSITION,
        Chance("lorentzian", "", "peak_lorentz, else gaussian_peak", probability=0.4),
        LogUniform("peak_contrast", "x underlying I", "observed (smeared) height of the peaks over the curve",
                   low=2.5, high=50.0),
        Uniform("peak_decay", "", "height of order n+1 over order n", low=0.2, high=0.9),
        Chance("broadened", "", "paracrystalline broadening of the higher orders", probability=0.5),
        Uniform("peak_broadening", "", "g: width_n = width_1 (1 + g (h_n^2 - 1)), when broadened (else 0)",
                low=0.0, high=0.3),
        Uniform("peak_amplitude", "", "each peak's height times this", low=0.5, high=1.5),
    ), weight=1.0 - _LAMELLAR_STACK.probability,
        description="gaussian_peak/peak_lorentz at the ratios of a lattice (LATTICES, chosen alike, drawn first) on a particle"),
})


# ----------------------------------------------------------------------------- bimodal

BIMODAL = ClassSpec((
    Uniform("knee_position", "window", "knee of the large population", low=0.03, high=0.4),
    LogUniform("rg_ratio", "", "Rg of the large over the small population", low=3.2, high=20.0),
), name="bimodal", description="two populations; the small one's amplitude is drawn log-uniform inside the interval "
                               "where each holds >= 60 % of I at its own knee")


# ----------------------------------------------------------------------------- oversubtracted

#: Over-subtraction of a flat background: also the secondary anomaly.
OVERSUBTRACTION = Table((
    Uniform("negative_fraction", "points", "last part of the window where the noise-free curve goes below zero",
            low=0.12, high=0.6),
    Uniform("depth", "x max I beyond the crossing", "the background subtracted in excess", low=1.05, high=1.6),
))

OVERSUBTRACTED = ClassSpec((KNEE_POSITION, *OVERSUBTRACTION), name="oversubtracted",
                           description="a clean curve with a flat background over-subtracted")


# ----------------------------------------------------------------------------- artefact

#: Instrument and reduction faults (no sasmodels model exists for them); tables in the order drawn.
ARTEFACTS: dict[str, Option] = {
    "spikes": Option((
        Uniform("fraction", "points", "share of the points hit (at least 3, >= 3 points apart)", low=0.01, high=0.03),
        Chance("upward", "", "each spike up, else down", probability=0.8),
        Uniform("size_sigma", "dI", "each spike at least this many sigma off", low=8.0, high=50.0),
        Uniform("size_relative", "I", "and at least this share of I off", low=0.25, high=2.0),
    ), weight=0.2, description="isolated spikes"),
    "step": Option((
        PointRange("boundary", "points", "where the segments meet (a point with dI/I < 5 %)", low=0.2, high=0.8, margin=8),
        LogUniform("factor", "", "multiplicative step between merged detector segments", low=1.4, high=3.0),
        Chance("up", "", "the later segment higher, else lower (1/factor)", probability=0.5),
    ), weight=0.2, description="a step between merged detector segments or configurations"),
    "beamstop": Option((
        Uniform("affected_fraction", "points", "the first points, at least 2", low=0.02, high=0.08),
        Uniform("transmission", "", "transmission at the first point", low=0.02, high=0.4),
        Uniform("ramp_power", "", "exponent of the transmission's rise to 1", low=1.0, high=3.0),
    ), weight=0.15, description="the shadow of the beamstop over the first points"),
    "parasitic": Option((
        Uniform("affected_fraction", "points", "the first points, at least 2", low=0.02, high=0.08),
        LogUniform("amplitude", "x |I(q_min)|", "the additive term at q_min (falling to 2 % at the last affected point)",
                   low=1.5, high=30.0),
    ), weight=0.15, description="steep parasitic scattering (slits, windows) confined to the first points"),
    "edge_points": Option((
        Choice("count", "", "bad points at the beamstop edge", options=(1, 2, 3, 4), weights=(0.4, 0.3, 0.2, 0.1)),
        Chance("low", "", "too low (partly shadowed pixels), else too high", probability=0.75),
        Uniform("factor_low", "x I", "when low", low=0.05, high=0.6),
        Uniform("factor_high", "x I", "when high", low=1.6, high=6.0),
    ), weight=0.2, description="one to four points at the beamstop edge far off the curve"),
    "cell_residue": Option((
        LogUniform("peak_q", "1/Å", "the window material's broad peak (Kapton, mica, quartz)", low=0.05, high=1.3),
        Uniform("width", "x peak_q", "relative Gaussian width", low=0.1, high=0.35),
        Uniform("height", "x |I(peak_q)|", "", low=0.05, high=0.6),
        Chance("added", "", "residue added, else removed", probability=0.6),
    ), weight=0.1, description="an empty-cell or capillary subtraction residue"),
}

ARTEFACT = ClassSpec((KNEE_POSITION,), name="artefact", description="a clean curve with an instrument or reduction fault",
                     options=ARTEFACTS)


# ----------------------------------------------------------------------------- clean and its near misses

#: Anomalies just below the visibility line of docs/taxonomy.md laid on clean curves (still ``clean``).
NEAR_MISSES: dict[str, Option] = {
    "weak_upturn": Option((
        Uniform("excess_at_q_min", "x I(q_min)", "an aggregate model (AGGREGATES) scaled to this at q_min", low=0.05, high=0.9),
    ), weight=0.25, description="a weak low-q rise over two or three points"),
    "short_upturn": Option((
        LogUniform("excess_at_q_min", "x I(q_min)", "a large aggregate's Guinier term scaled to this at q_min", low=2.0, high=20.0),
        Uniform("q_min_rg", "", "q_min times the aggregate's Rg: its knee at the first points, so it falls off fast", low=1.5, high=5.0),
    ), weight=0.2, description="a strong but short low-q rise over fewer points than an upturn needs"),
    "weak_structure": Option((
        Uniform("radius_effective", "Å", "", relative_to="radius", low=1.0, high=1.15),
        Uniform("volfraction", "", "dilute", low=0.005, high=0.06),
    ), weight=0.15, description="a weak hard-sphere S(q)"),
    "minor_population": Option((
        LogUniform("rg_ratio", "", "Rg of the second population over the particle's (or the inverse)", low=0.05, high=0.3),
        Chance("smaller", "", "the second population smaller, else larger", probability=0.7),
        Uniform("peak_sigma", "dI", "its strongest point, near not across the visibility line", low=0.5, high=6.0),
    ), weight=0.15, description="a minor second population"),
    "few_spikes": Option((
        Choice("count", "", "", options=(1, 2)),
        Chance("upward", "", "", probability=0.8),
        Uniform("size_sigma", "dI", "", low=6.0, high=40.0),
        Uniform("size_relative", "I", "", low=0.25, high=1.5),
    ), weight=0.1, description="one or two spikes"),
    "small_step": Option((
        PointRange("boundary", "points", "", low=0.2, high=0.8, margin=8),
        LogUniform("factor", "", "", low=1.02, high=1.2),
        Chance("up", "", "", probability=0.5),
    ), weight=0.1, description="a small step between segments"),
    "edge_point": Option((
        Choice("count", "", "", options=(1, 2, 3), weights=(0.5, 0.3, 0.2)),
        Uniform("factor", "x I", "", low=0.8, high=0.97),
        Chance("low", "", "too low, else too high (1/factor)", probability=0.75),
    ), weight=0.1, description="slightly low (or high) points at the beamstop edge"),
    "low_q_dip": Option((
        Uniform("affected_fraction", "points", "the first points, at least 2", low=0.01, high=0.05),
        Uniform("transmission", "", "at the first point", low=0.6, high=0.95),
    ), weight=0.1, description="a shallow low-q dip"),
    "background_offset": Option((
        Uniform("fraction", "x high-q floor", "subtracted from the curve", low=0.2, high=0.9),
    ), weight=0.05, description="a background offset"),
}

CLEAN = ClassSpec((
    KNEE_POSITION,
    Chance("near_miss", "", "the curve carries a near miss (tried up to 4 times, then none)", probability=0.35),
), name="clean", description="one population (shapes.SHAPES)", options=NEAR_MISSES)


# ----------------------------------------------------------------------------- mixtures

#: Secondary anomalies laid on a finished anomalous curve (taxonomy version 2).
MIXTURES = Table((
    Chance("mixture", "", "an anomalous curve gets secondary anomalies", probability=0.35),
    Chance("one_secondary", "", "one secondary anomaly, else two (when the class allows two)", probability=0.8),
    LogUniform("aggregate_excess", "x I(q_min)", "a secondary aggregate's intensity at q_min", low=1.0, high=30.0),
))


# ----------------------------------------------------------------------------- reported uncertainties

#: What the file reports as dI, drawn last for every curve (simulator 2.4). The noise in the curve and every
#: visibility test use the true counting noise; only the stored uncertainties change. Real reductions report
#: error bars that disagree with the point-to-point scatter by 0.04x to 10^4x (measured on SasView's example
#: data: docs/experiments/sim24_breadth.md), or none at all.
REPORTED_UNCERTAINTIES: dict[str, Option] = {
    "honest": Option((), weight=0.6, description="dI = the counting noise in the curve"),
    "scaled": Option((
        LogUniform("factor", "", "reported dI over the true noise (a wrong normalisation of the errors, "
                   "oversampled or correlated pixels, uncertainties propagated without the background's)",
                   low=0.03, high=30.0),
    ), weight=0.3, description="dI off by one factor for the whole curve"),
    "missing": Option((), weight=0.1, description="no uncertainties in the file (dI NaN: the runtime estimates them "
                                                   "from the scatter)"),
}


#: One spec per class, in taxonomy order.
CLASSES: dict[str, ClassSpec] = {spec.name: spec for spec in
                                 (CLEAN, AGGREGATION, INTERPARTICLE, ORDERED, BIMODAL, OVERSUBTRACTED, ARTEFACT)}
