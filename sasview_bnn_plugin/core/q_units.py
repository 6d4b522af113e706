"""Which unit q is in when the data do not say: never a silent 10x.

Plain ASCII columns, jscatter's files and Anton Paar PDH files read by
sasdata's ASCII fallback carry no q unit (sasdata labels them 1/Å by default).
A curve's ``q_unit_source`` (:class:`~sasview_bnn_plugin.core.curve.Curve`) says
whether its unit was given ("file"), set by the user ("user") or is only a
reader's default ("assumed"). For an assumed unit the runtime decides here, in
two steps, and the result row always says which unit was used and why:

1. :func:`resolve_q_unit` — plausibility of the q range alone (numbers as in
   the file, q_min and q_max of the finite points with q > 0):

   - q_max > 1.5 cannot be 1/Å for a small-angle curve (SAXS/SANS end near
     1 1/Å; the model's domain ends at 1 1/Å) → 1/nm;
   - q_min < 2e-3 in 1/nm would be below 2e-4 1/Å, which only ultra-small-angle
     instruments reach (and these report 1/Å); below 1e-4 it would be under
     1e-5 1/Å, which no instrument reaches → 1/Å;
   - otherwise (typical 1/Å data: 1e-3-1e-2 to 0.2-1; 1/nm data are 10x larger
     and usually reach beyond 1.5) both units are plausible. When the curve has
     points at q < 0 (through the beam centre, as PDH files do) its lowest
     positive q says nothing about the instrument, and only q_max counts.

2. :func:`decide_q_unit` — when both are plausible the classifier runs both
   readings in one batch and this keeps the one the model finds
   in-distribution: the preferred unit (the reader's default: 1/Å, the usual
   unit of small-angle files, or 1/nm for a PDH file) stays unless the model
   finds the curve novel in it and not in the other unit (or novel both ways
   but clearly less so in the other). On SasView's example data a true 1/Å
   curve is often in-distribution both ways, sometimes with the lower score
   as 1/nm, so a lower score alone is no reason to leave the preferred unit.
   The unit is reported *uncertain* unless the kept reading is in-distribution,
   the other is not, their novelty scores differ by at least
   :data:`NOVELTY_MARGIN` and both give the same label.

numpy only; no model, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .preprocessing import q_unit_factor

INVERSE_ANGSTROM = "1/A"
INVERSE_NANOMETRE = "1/nm"
#: Values of the q-unit setting (``--q-unit``, ``BNNClassifier(q_unit=...)``, the SasView preference).
Q_UNIT_CHOICES: tuple[str, ...] = ("auto", INVERSE_ANGSTROM, INVERSE_NANOMETRE)

#: Above this q (as a number) the values cannot be 1/Å for a small-angle curve.
MAX_Q_AS_INVERSE_ANGSTROM = 1.5
#: Below this q_min (as a number) 1/nm would mean under 2e-4 1/Å: ultra-small-angle instruments only.
MIN_Q_AS_INVERSE_NANOMETRE = 2e-3
#: Below this q_min (as a number) 1/nm would mean under 1e-5 1/Å: no instrument reaches it.
IMPOSSIBLE_Q_AS_INVERSE_NANOMETRE = 1e-4
#: Novelty scores of the two readings closer than this factor do not tell the units apart.
NOVELTY_MARGIN = 1.5

_SHOWN = {INVERSE_ANGSTROM: "1/Å", INVERSE_NANOMETRE: "1/nm"}


def canonical_q_unit(unit: Any) -> str | None:
    """"1/A" or "1/nm" for any spelling :func:`~sasview_bnn_plugin.core.preprocessing.q_unit_factor` knows; None for no unit.

    Raises :class:`~sasview_bnn_plugin.core.preprocessing.CurveError` for a unit it does not understand.
    """
    if unit is None or not str(unit).strip():
        return None
    factor, _ = q_unit_factor(str(unit))
    return INVERSE_ANGSTROM if factor == 1.0 else INVERSE_NANOMETRE


def q_unit_setting(value: Any) -> str:
    """The q-unit setting "auto", "1/A" or "1/nm" from ``value`` (None or "" is "auto"); ValueError otherwise."""
    if value is None or str(value).strip().lower() in ("", "auto"):
        return "auto"
    try:
        unit = canonical_q_unit(value)
    except ValueError:
        unit = None
    if unit is None:
        raise ValueError(f"the q unit must be one of {', '.join(Q_UNIT_CHOICES)}, not {value!r}")
    return unit


def shown(unit: str) -> str:
    """How a canonical unit is written for people: "1/Å" or "1/nm"."""
    return _SHOWN.get(unit, unit)


def _other(unit: str) -> str:
    return INVERSE_NANOMETRE if unit == INVERSE_ANGSTROM else INVERSE_ANGSTROM


@dataclass(frozen=True)
class QUnitResolution:
    """What the q range says about an unknown unit.

    ``candidates`` holds one unit when the range decides (then ``reason`` says
    why, e.g. "q reaches 3.2, beyond any 1/Å small-angle range") and two,
    the preferred one first, when both are plausible and the model must decide.
    """

    candidates: tuple[str, ...]
    reason: str = ""

    @property
    def unit(self) -> str:
        """The unit decided, or the preferred one when the model must decide."""
        return self.candidates[0]

    @property
    def needs_model(self) -> bool:
        return len(self.candidates) > 1


def resolve_q_unit(q: Any, intensity: Any = None, preferred: str | None = None) -> QUnitResolution:
    """The plausible unit(s) of q given as numbers without a unit (see the module docstring).

    ``q`` and ``intensity`` have shape (points,); points with a non-finite
    intensity are left out when ``intensity`` is given. ``preferred`` ("1/A"
    by default) comes first when both units are plausible, and is kept when
    there is no usable q at all (the preprocessing then refuses the curve).
    """
    first = canonical_q_unit(preferred) or INVERSE_ANGSTROM
    if np.iscomplexobj(q):
        return QUnitResolution((first,))
    try:
        values = np.asarray(q, dtype=np.float64).ravel()
    except (TypeError, ValueError, OverflowError):
        return QUnitResolution((first,))
    usable = np.isfinite(values)
    if intensity is not None and not np.iscomplexobj(intensity):
        try:
            i_arr = np.asarray(intensity, dtype=np.float64).ravel()
        except (TypeError, ValueError, OverflowError):
            i_arr = None
        if i_arr is not None and i_arr.shape == values.shape:
            usable &= np.isfinite(i_arr)
    positive = values[usable & (values > 0)]
    if positive.size == 0:
        return QUnitResolution((first,))
    return _resolution(first, float(positive.min()), float(positive.max()), bool((values[usable] < 0).any()))


def resolve_q_units(curves: Sequence[tuple[Any, Any, str | None]]) -> list[QUnitResolution]:
    """:func:`resolve_q_unit` of each (q, intensity, preferred) of ``curves``, the same resolutions: the q ranges
    of the curves of plain real arrays (q and I of one shape, or I None) found with numpy over all their points
    at once, the others one by one."""
    out: list[QUnitResolution | None] = [None] * len(curves)
    together: list[int] = []
    qs: list[np.ndarray] = []
    usable: list[np.ndarray] = []
    for k, (q, intensity, preferred) in enumerate(curves):
        values = q if isinstance(q, np.ndarray) and q.dtype == np.float64 else None
        i_arr = intensity if intensity is None or (isinstance(intensity, np.ndarray) and intensity.dtype == np.float64) else False
        if values is None or values.size == 0 or i_arr is False:
            out[k] = resolve_q_unit(q, intensity, preferred)
            continue
        values = values.ravel()
        finite = np.isfinite(values)
        if i_arr is not None and i_arr.size == values.size:
            finite &= np.isfinite(i_arr.ravel())
        together.append(k)
        qs.append(values)
        usable.append(finite)
    if together:
        values = np.concatenate(qs)
        ok = np.concatenate(usable)
        lengths = np.array([v.shape[0] for v in qs])
        starts = np.cumsum(lengths) - lengths
        positive = ok & (values > 0)
        q_lo = np.minimum.reduceat(np.where(positive, values, np.inf), starts).tolist()
        q_hi = np.maximum.reduceat(np.where(positive, values, -np.inf), starts).tolist()
        has_positive = np.logical_or.reduceat(positive, starts).tolist()
        through_zero = np.logical_or.reduceat(ok & (values < 0), starts).tolist()
        for j, k in enumerate(together):
            first = canonical_q_unit(curves[k][2]) or INVERSE_ANGSTROM
            out[k] = _resolution(first, q_lo[j], q_hi[j], through_zero[j]) if has_positive[j] else QUnitResolution((first,))
    return out  # type: ignore[return-value]


def _resolution(first: str, q_lo: float, q_hi: float, through_zero: bool) -> QUnitResolution:
    """The resolution of a curve whose positive usable q run from ``q_lo`` to ``q_hi`` (numbers as given), with points
    at q < 0 or not (``through_zero``); ``first`` the preferred unit."""
    both = (first, _other(first))
    angstrom_plausible = q_hi <= MAX_Q_AS_INVERSE_ANGSTROM
    nanometre_possible = through_zero or q_lo >= IMPOSSIBLE_Q_AS_INVERSE_NANOMETRE
    nanometre_plausible = through_zero or q_lo >= MIN_Q_AS_INVERSE_NANOMETRE
    if not nanometre_possible:
        return QUnitResolution(
            (INVERSE_ANGSTROM,), f"q starts at {q_lo:.3g}, which in 1/nm would be {q_lo / 10:.2g} 1/Å, below any instrument's reach"
        )
    if angstrom_plausible and not nanometre_plausible:
        return QUnitResolution(
            (INVERSE_ANGSTROM,),
            f"q starts at {q_lo:.3g}, which in 1/nm would be {q_lo / 10:.2g} 1/Å, reached only by ultra-small-angle instruments",
        )
    if q_hi > 10 * MAX_Q_AS_INVERSE_ANGSTROM:  # beyond 1.5 1/Å even in 1/nm
        return QUnitResolution(both, f"q reaches {q_hi:.3g}, beyond any small-angle range in 1/Å and even in 1/nm")
    if nanometre_plausible and not angstrom_plausible:
        return QUnitResolution((INVERSE_NANOMETRE,), f"q reaches {q_hi:.3g}, beyond any 1/Å small-angle range")
    if not angstrom_plausible:  # q from below 2e-3 to beyond 1.5: unusual either way
        return QUnitResolution(both, f"q runs from {q_lo:.3g} to {q_hi:.3g}, unusual in either unit")
    return QUnitResolution(both)


@dataclass(frozen=True)
class ModelVerdict:
    """The model's answer for one reading of a curve: its novelty score, whether that is novel, the label."""

    novelty: float
    novel: bool
    label: str


@dataclass(frozen=True)
class QUnitDecision:
    """The unit a curve is read in, whether it is uncertain, and the sentence saying so."""

    unit: str
    uncertain: bool
    note: str


def _preferred_why(unit: str) -> str:
    if unit == INVERSE_ANGSTROM:
        return "1/Å is the usual unit of small-angle data files"
    return "1/nm is the unit this kind of file stores"


def decide_q_unit(
    resolution: QUnitResolution,
    verdicts: Mapping[str, ModelVerdict | str] | None = None,
    subject: str = "q unit not given",
) -> QUnitDecision:
    """The unit to read a curve in, from its resolution and, when it needs one, the model check.

    ``verdicts`` maps each of ``resolution.candidates`` to the model's
    :class:`ModelVerdict` on that reading, or to the message saying why that
    reading cannot be classified. ``subject`` opens the note ("q unit not
    given in the file").
    """
    if not resolution.needs_model:
        unit = resolution.unit
        why = f" ({resolution.reason})" if resolution.reason else ""
        return QUnitDecision(unit, False, f"{subject}; read as {shown(unit)}{why}")
    preferred, other = resolution.candidates
    verdicts = verdicts or {}
    vp, vo = verdicts.get(preferred), verdicts.get(other)
    range_note = f" ({resolution.reason})" if resolution.reason else ""
    if not isinstance(vp, ModelVerdict) and not isinstance(vo, ModelVerdict):
        return QUnitDecision(
            preferred, True, f"{subject} and uncertain{range_note}: read as {shown(preferred)} ({_preferred_why(preferred)}); "
            f"the curve cannot be classified as {shown(preferred)} or as {shown(other)}",
        )
    if not isinstance(vp, ModelVerdict) or not isinstance(vo, ModelVerdict):
        unit = other if isinstance(vo, ModelVerdict) else preferred
        refused = vp if unit == other else vo
        reason = f" ({refused})" if isinstance(refused, str) and refused else ""
        return QUnitDecision(
            unit, False, f"{subject}{range_note}; read as {shown(unit)}: as {shown(_other(unit))} the curve cannot be classified{reason}"
        )
    if vp.novel and (not vo.novel or vo.novelty * NOVELTY_MARGIN <= vp.novelty):
        chosen, rejected, why = (other, vo), (preferred, vp), f"less novel as {shown(other)}"
    else:
        chosen, rejected, why = (preferred, vp), (other, vo), _preferred_why(preferred)
    (cu, cv), (ru, rv) = chosen, rejected
    low, high = sorted((cv.novelty, rv.novelty))
    close = high == low or high < NOVELTY_MARGIN * low
    same_label = cv.label == rv.label
    decisive = not cv.novel and rv.novel and not close and same_label
    if decisive:
        return QUnitDecision(
            cu, False, f"{subject}; read as {shown(cu)}: the model finds the curve in-distribution as {shown(cu)} "
            f"(novelty {cv.novelty:.2g}) and not as {shown(ru)} (novelty {rv.novelty:.2g})",
        )

    def seen(unit: str, verdict: ModelVerdict) -> str:
        return f"{shown(unit)} ({verdict.label}, novelty {verdict.novelty:.2g})"

    if not cv.novel and not rv.novel:
        finding = f"the model finds the curve in-distribution both as {seen(cu, cv)} and as {seen(ru, rv)}"
    elif cv.novel and rv.novel:
        finding = f"the model finds the curve unlike its training data both as {seen(cu, cv)} and as {seen(ru, rv)}"
    else:
        finding = f"the model finds the curve in-distribution as {seen(cu, cv)} and not as {seen(ru, rv)}"
        finding += ", but the scores are close" if close else ", but the two readings give different labels"
    return QUnitDecision(
        cu, True, f"{subject} and uncertain{range_note}: read as {shown(cu)} ({why}); {finding}; if q is in {shown(ru)}, give the unit"
    )


def forced_note(unit: str, q: Any, intensity: Any = None, subject: str = "q unit not given") -> str:
    """The note for a curve read in ``unit`` because the user said so; warns when its q range speaks against it."""
    note = f"{subject}; read as {shown(unit)}, as requested"
    resolution = resolve_q_unit(q, intensity, unit)
    if not resolution.needs_model and resolution.unit != unit and resolution.reason:
        note += f", although {resolution.reason}"
    return note


@dataclass
class QUnitReading:
    """One reading of a curve: the unit its q is read in and why.

    ``unit`` is "1/A" or "1/nm" (the file's own spelling when the
    preprocessing does not understand it, None when there is no curve);
    ``source`` is where it comes from ("file", "user" or "assumed", as
    :attr:`Curve.q_unit_source <sasview_bnn_plugin.core.curve.Curve>`); ``note`` the
    sentence for the row. A reading that is one of two hypotheses keeps the
    ``resolution`` and the note's ``subject`` until :func:`decide_q_unit` has
    chosen.
    """

    unit: str | None
    source: str
    note: str | None = None
    uncertain: bool = False
    resolution: QUnitResolution | None = None
    subject: str = "q unit not given"

    @property
    def notes(self) -> list[str]:
        return [self.note] if self.note else []
