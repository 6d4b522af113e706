"""The one preprocessing used by training and inference alike.

A measured or simulated curve I(q) from any instrument is mapped onto one fixed
model input of shape (channels, bins) = (4, n_bins) over a fixed log-spaced
q-domain (default 1e-4 to 1 1/Å, 256 bins):

0. ``intensity``: the scale-free intensity T(x) of each bin, where x = I / I_ref
   is the bin-averaged intensity divided by the curve's reference intensity
   (the maximum of its 5-point running median) and
   T(x) = asinh(x / 2s) / asinh(1 / 2s) (s = ``softening``). T behaves like a
   logarithm for x >> s, is linear near zero and odd, so zero and negative
   intensities (over-subtracted background) are represented, not dropped.
   Bins without a point but inside the measured window are interpolated in
   log q; bins outside the window are 0.
1. ``coverage``: 1 for bins inside the measured q-window, 0 outside.
2. ``outlier``: per bin, the signed point-level deviation from a running
   median in units of the point's uncertainty, z = (I - median)/sigma, the
   largest |z| of the bin kept, compressed as asinh(z / z_scale). Isolated
   spikes, which bin averaging would erase, survive here.
3. ``jump``: per bin, the signed jump between consecutive points in T beyond
   the local trend (running median of the point-to-point differences), in
   units of its uncertainty, largest |z| kept, compressed the same way. A
   multiplicative step between detector segments survives here even when
   binning blurs it in channel 0.

Two more channels can be chosen (``channels`` of the config; a model's
metadata says which it was trained with). They carry what the visibility rule
of docs/taxonomy.md counts and the four above lose in binning: how many points
a change of the curve moves, and against what noise.

4. ``density``: the number of points n in each bin, as log2(1 + n) / 8
   (0 for an empty bin; 1 at 255 points). A linearly spaced curve has most of
   its points at high q, a log-spaced one spreads them evenly.
5. ``noise``: the bin's mean of log10 of the points' relative uncertainty
   sigma / |I| (sigma as for channel 2; |I| the running median, floored at
   ``softening`` times the reference), clipped to [-4, 1] and mapped to
   (v + 4) / 5, so 0 is 0.01 %, 0.6 is 10 % and 1 is 1000 %; 0 in empty bins.

Uncertainties (``noise_scale``). Channels 2, 3 and 5 measure against sigma,
the reported dI where usable (a local robust scatter where not). Files often
report dI off by one large factor for the whole curve (on SasView's example
files the point-to-point scatter is 0.04x to 28,000x the reported dI;
docs/experiments/sim24_breadth.md), and then a 5-sigma spike reads as 0.2
sigma. With ``noise_scale="scatter"`` each curve's dI are multiplied by one
factor, the robust ratio of the curve's own point-to-point scatter to its dI
(:func:`scatter_factors`): dI keep the shape of the noise along q, the curve
sets its scale. ``"stated"`` (the default, and what every model before it was
trained with) uses dI as given.

Every setting lives in :class:`PreprocessingConfig`, which serialises to JSON
so that it can be written into the ONNX metadata and reproduced exactly.

Inputs that cannot be mapped honestly are refused with :class:`CurveError`
(a ``ValueError``) whose message speaks to a scientist.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

CHANNELS: tuple[str, ...] = ("intensity", "coverage", "outlier", "jump")
#: Channels a config may add after :data:`CHANNELS` (module docstring, channels 4 and 5).
EXTRA_CHANNELS: tuple[str, ...] = ("density", "noise")
#: How a curve's dI are scaled before they are used (module docstring, "Uncertainties").
NOISE_SCALES: tuple[str, ...] = ("stated", "scatter")
#: Points (each with two neighbours on either side) a curve needs for :func:`scatter_factors` to rescale its dI.
MIN_SCATTER_POINTS = 10
#: Relative dI up to which a point takes part in :func:`scatter_factors` (log I is then nearly Gaussian).
MAX_SCATTER_RELATIVE_NOISE = 0.3
#: :func:`scatter_factors` rescales dI only when |log factor| exceeds this over sqrt(points used): 3 standard errors.
SCATTER_SIGNIFICANCE = 5.0

#: Accepted spellings of the two q units, after normalisation (lower case,
#: no spaces, braces, carets or underscores; Å and "angstrom" become "a").
_INVERSE_ANGSTROM = {"1/a", "a-1", "a^-1", "inva", "a**-1", "per_a", "pera", "1/ang", "ang-1", "inv_a"}
_INVERSE_NANOMETRE = {"1/nm", "nm-1", "nm^-1", "invnm", "nm**-1", "pernm", "inv_nm"}


class CurveError(ValueError):
    """A curve that cannot be turned into a model input; the message says why."""


@dataclass(frozen=True)
class PreprocessingConfig:
    """Every setting of the preprocessing; serialisable to and from JSON.

    q values are in 1/Å.
    """

    q_min: float = 1e-4
    q_max: float = 1.0
    n_bins: int = 256
    min_points: int = 30
    min_overlap_decades: float = 0.5
    softening: float = 1e-5
    median_window: int = 5
    noise_window: int = 15
    relative_noise_floor: float = 1e-3
    z_scale: float = 5.0
    version: int = 1
    channels: tuple[str, ...] = CHANNELS
    noise_scale: str = NOISE_SCALES[0]

    def __post_init__(self) -> None:
        if self.noise_scale not in NOISE_SCALES:
            raise ValueError(f"noise_scale must be one of {', '.join(NOISE_SCALES)}, not {self.noise_scale!r}")
        channels = tuple(self.channels)
        extras = channels[len(CHANNELS):]
        if channels[:len(CHANNELS)] != CHANNELS or len(set(extras)) != len(extras) or not set(extras) <= set(EXTRA_CHANNELS):
            raise ValueError(
                f"the model input's channels must be {', '.join(CHANNELS)}, then any of {', '.join(EXTRA_CHANNELS)} "
                f"once each; got {', '.join(map(str, channels))}"
            )
        object.__setattr__(self, "channels", channels)

    def to_json(self) -> str:
        """JSON text holding every field (for ONNX metadata and HDF5 attributes); ``noise_scale`` only when it is not
        "stated", so that the settings of every earlier model and features file read and compare as they were."""
        fields = dataclasses.asdict(self)
        if fields["noise_scale"] == NOISE_SCALES[0]:
            del fields["noise_scale"]
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PreprocessingConfig":
        """Rebuild a config from :meth:`to_json` output; unknown keys are refused."""
        raw = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise ValueError(f"preprocessing settings {sorted(unknown)} are unknown to this version of sasview-bnn")
        if "channels" in raw:
            raw["channels"] = tuple(raw["channels"])
        return cls(**raw)

    @functools.cached_property
    def bin_edges(self) -> np.ndarray:
        """Edges of the log-spaced bins, shape (n_bins + 1,), in 1/Å."""
        return np.geomspace(self.q_min, self.q_max, self.n_bins + 1)

    @functools.cached_property
    def bin_centres(self) -> np.ndarray:
        """Geometric centres of the bins, shape (n_bins,), in 1/Å."""
        e = self.bin_edges
        return np.sqrt(e[:-1] * e[1:])

    @property
    def input_shape(self) -> tuple[int, int]:
        """Shape of one model input: (channels, bins)."""
        return (len(self.channels), self.n_bins)


@dataclass
class ModelInput:
    """One curve mapped onto the model grid.

    ``features`` has shape (channels, bins) and dtype float32. ``coverage`` is the
    fraction of the model's q-domain covered by the data (in log q).
    ``q_window`` is the (min, max) q of the points used, in 1/Å.
    ``notes`` holds non-fatal remarks (assumed unit, dropped points).
    """

    features: np.ndarray
    coverage: float
    q_window: tuple[float, float]
    n_points: int
    notes: list[str] = field(default_factory=list)


def q_unit_factor(unit: str | None) -> tuple[float, str | None]:
    """Factor that converts q in ``unit`` to 1/Å, and a note if the unit was assumed.

    ``None`` or an empty string means no unit was given: 1/Å is assumed and a
    note says so. Unknown units raise :class:`CurveError`.
    """
    if unit is None or isinstance(unit, str):
        return _known_unit_factor(unit)  # the spellings met are remembered
    return _known_unit_factor.__wrapped__(unit)


@functools.lru_cache(maxsize=256)
def _known_unit_factor(unit: Any) -> tuple[float, str | None]:
    if unit is None or not str(unit).strip():
        return 1.0, "no q unit was given; q is assumed to be in 1/Å"
    text = str(unit).strip().lower()
    text = text.replace("å", "a").replace("\u212b", "a").replace("angstroms", "a").replace("angstrom", "a")
    text = re.sub(r"[\s{}()]", "", text)
    text = text.replace("nanometers", "nm").replace("nanometres", "nm").replace("nanometer", "nm").replace("nanometre", "nm")
    if text in _INVERSE_ANGSTROM:
        return 1.0, None
    if text in _INVERSE_NANOMETRE:
        return 0.1, None
    raise CurveError(f"q unit {unit!r} is not understood; give q in 1/Å or 1/nm")


def _as_1d(name: str, values: Any, length: int | None = None) -> np.ndarray:
    try:
        if np.iscomplexobj(values):
            raise CurveError(f"{name} holds complex numbers; it must be real numbers")
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as err:
        if isinstance(err, CurveError):
            raise
        raise CurveError(f"{name} must be numbers") from None
    if arr.ndim == 0:
        raise CurveError(f"{name} is a single number; a curve needs one value per point")
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise CurveError(
            f"{name} has shape {arr.shape}: this looks like 2D data; sasview-bnn classifies "
            "1D curves I(q) only (reduce the image to I(q) first)"
        )
    if length is not None and arr.shape[0] != length:
        raise CurveError(f"{name} has {arr.shape[0]} values but q has {length}")
    return arr


def _running_medians(values: np.ndarray, lengths: np.ndarray, window: int) -> np.ndarray:
    """The centred running median of each curve in ``values`` (curves of ``lengths`` points one after the
    other), shape preserved; a curve's ends are padded by reflection (``np.pad(mode="reflect")``), its
    window narrowed to 2 * ((n - 1) // 2) + 1 points for a short curve (none for n < 3: the values)."""
    out = values.copy()
    halves = np.minimum(window // 2, (lengths - 1) // 2)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for half in np.unique(halves[halves >= 1]):
        chosen = np.flatnonzero(halves == half)
        n = lengths[chosen]
        padded_n = n + 2 * half
        # Each chosen curve padded by reflection, one after the other: index -half .. n - 1 + half of each curve.
        local = np.arange(padded_n.sum()) - np.repeat(np.cumsum(padded_n) - padded_n, padded_n) - half
        last = np.repeat(n - 1, padded_n)
        local = np.abs(local)
        local = np.where(local > last, 2 * last - local, local)
        padded = values[np.repeat(starts[chosen], padded_n) + local]
        # The window of point p of a curve starts at padded position p; windows crossing two curves are skipped.
        window_starts = np.arange(n.sum()) + np.repeat(np.cumsum(padded_n) - padded_n - (np.cumsum(n) - n), n)
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)[window_starts]
        windows.partition(half, axis=1)
        out[np.repeat(starts[chosen] - (np.cumsum(n) - n), n) + np.arange(n.sum())] = windows[:, half]
    return out


def _transform(x: np.ndarray, softening: float) -> np.ndarray:
    """T(x) = asinh(x/2s)/asinh(1/2s): log-like for x >> s, odd, linear near 0."""
    return np.arcsinh(x / (2.0 * softening)) / math.asinh(1.0 / (2.0 * softening))


def _transform_slope(x: np.ndarray, softening: float) -> np.ndarray:
    """dT/dx, used to carry uncertainties into T."""
    two_s = 2.0 * softening
    return 1.0 / (two_s * np.sqrt(1.0 + (x / two_s) ** 2)) / math.asinh(1.0 / two_s)


def _strongest_per_bin(bins: np.ndarray, z: np.ndarray, n_bins: int, z_scale: float) -> np.ndarray:
    """For every bin, the signed z of largest magnitude, compressed by asinh(z/z_scale); of equal magnitudes
    the last point's (what a stable sort of the points by bin, then |z|, keeps last). ``bins`` must not
    decrease (the points of a curve sorted by q, the curves one after the other): they are taken run by run."""
    out = np.zeros(n_bins, dtype=np.float64)
    if z.size == 0:
        return out
    magnitude = np.abs(z)
    new_run = np.concatenate(([True], bins[1:] != bins[:-1]))
    runs = np.flatnonzero(new_run)
    largest = np.maximum.reduceat(magnitude, runs)
    run_of = np.cumsum(new_run) - 1
    positions = np.arange(z.size)
    chosen = np.maximum.reduceat(np.where(magnitude == largest[run_of], positions, -1), runs)
    # A run whose largest magnitude is NaN (a sort puts NaN last): its value is NaN, and the curve is refused.
    picked = np.where(chosen >= 0, z[np.maximum(chosen, 0)], np.nan)
    out[bins[runs]] = np.arcsinh(picked / z_scale)
    return out


def prepare_curve(
    q: Sequence[float] | np.ndarray,
    intensity: Sequence[float] | np.ndarray,
    d_intensity: Sequence[float] | np.ndarray | None = None,
    q_unit: str | None = None,
    config: PreprocessingConfig | None = None,
) -> ModelInput:
    """Map one curve onto the model input.

    Parameters
    ----------
    q:
        Scattering vector, shape (points,), in ``q_unit``.
    intensity:
        I(q), shape (points,), any scale; zero and negative values allowed.
    d_intensity:
        One-sigma uncertainty of I, shape (points,), or None. Missing, zero or
        non-finite values are replaced by a local scatter estimate.
    q_unit:
        "1/Å" (also "1/A", "A^{-1}", …) or "1/nm" (also "nm^{-1}", …).
        None: 1/Å is assumed and a note records it.
    config:
        Preprocessing settings; the default config if None.

    Returns
    -------
    ModelInput with ``features`` of shape (channels, n_bins), float32 (4 channels by default).

    Raises
    ------
    CurveError
        2D data, mismatched lengths, an unknown unit, all intensities
        non-finite or non-positive, fewer than ``min_points`` valid points in
        the domain, or less than ``min_overlap_decades`` of overlap with it.
    """
    outcome = prepare_many([(q, intensity, d_intensity, q_unit)], config)[0]
    if isinstance(outcome, CurveError):
        raise outcome
    return outcome


def prepare_many(
    curves: Sequence[tuple[Any, Any, Any, str | None]],
    config: PreprocessingConfig | None = None,
) -> list[ModelInput | CurveError]:
    """Map many curves, each exactly as :func:`prepare_curve` maps it alone (it is this function on one
    curve); a refused curve never stops the others.

    ``curves`` holds (q, I, dI or None, q_unit) tuples. Each curve is checked and cleaned as on its own
    (:func:`_clean_curves`: the refusals with their messages), then all accepted curves are mapped onto
    the grid at once (:func:`_map_onto_grid`), both with numpy over the concatenated points: the same
    operations on the same numbers, so the features are bit for bit those of one curve at a time.
    Returns per curve its :class:`ModelInput` or its :class:`CurveError`.
    """
    cfg = config or PreprocessingConfig()
    outcomes: list[ModelInput | CurveError | None] = [None] * len(curves)
    cleaned, refused = _clean_curves(curves, cfg)
    for k, err in refused.items():
        outcomes[k] = err
    if cleaned.index:
        with np.errstate(all="ignore"):  # non-finite results are refused, not warned about
            mapped = _map_onto_grid(cleaned, cfg)
        for k, outcome in zip(cleaned.index, mapped):
            outcomes[k] = outcome
    return outcomes  # type: ignore[return-value]


@dataclass
class _CleanCurves:
    """Curves checked and cleaned for :func:`_map_onto_grid`, one after the other: ``q`` in 1/Å (total points,),
    sorted and unique within each curve and inside the domain, ``intensity`` and ``d_intensity`` (NaN where none
    was given) of the same shape, I and dI rescaled if extreme; per curve (first axis: the curves kept) its number
    of points ``lengths``, its position ``index`` among the curves given and its ``notes``."""

    q: np.ndarray
    intensity: np.ndarray
    d_intensity: np.ndarray
    lengths: np.ndarray
    index: list[int]
    notes: list[list[str]]


def _clean_curves(curves: Sequence[tuple[Any, Any, Any, str | None]], cfg: PreprocessingConfig) -> tuple[_CleanCurves, dict[int, CurveError]]:
    """Each curve checked and cleaned as on its own: q in 1/Å, sorted (stable), unique (first kept), inside the domain,
    I and dI rescaled if extreme, and the notes; or the :class:`CurveError` saying why it is refused (the first check
    it fails, in this order). The arrays' checks run per curve, the rest with numpy over the points of all curves
    (filtering, sorting and counting within each curve: the same numbers as one curve at a time)."""
    refused: dict[int, CurveError] = {}
    given: list[int] = []
    qs: list[np.ndarray] = []
    intensities: list[np.ndarray] = []
    uncertainties: list[np.ndarray] = []
    factors: list[float] = []
    unit_notes: list[str | None] = []
    for k, (q, intensity, d_intensity, q_unit) in enumerate(curves):
        try:
            q_arr = _as_1d("q", q)
            i_arr = _as_1d("intensity", intensity, q_arr.shape[0])
            di_arr = None if d_intensity is None else _as_1d("uncertainty dI", d_intensity, q_arr.shape[0])
            factor, unit_note = q_unit_factor(q_unit)
        except CurveError as err:
            refused[k] = err
            continue
        if q_arr.size == 0:
            refused[k] = CurveError("the curve has no points")
            continue
        given.append(k)
        qs.append(q_arr)
        intensities.append(i_arr)
        uncertainties.append(np.full(q_arr.shape[0], np.nan) if di_arr is None else di_arr)
        factors.append(factor)
        unit_notes.append(unit_note)
    if not given:
        empty = np.zeros(0)
        return _CleanCurves(empty, empty, empty, np.zeros(0, dtype=np.int64), [], []), refused

    m = len(given)
    lengths = np.array([a.shape[0] for a in qs], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    curve_of = np.repeat(np.arange(m), lengths)
    q_raw = np.concatenate(qs)
    i_arr = np.concatenate(intensities)
    di_arr = np.concatenate(uncertainties)
    # The largest finite q as given (-inf: none), for the note on a curve without a unit.
    finite_q_max = np.maximum.reduceat(np.where(np.isfinite(q_raw), q_raw, -np.inf), starts).tolist()
    q_arr = q_raw * np.repeat(np.array(factors), lengths)
    any_finite_i = np.bincount(curve_of[np.isfinite(i_arr)], minlength=m) > 0

    valid = np.isfinite(q_arr) & (q_arr > 0) & np.isfinite(i_arr)
    n_dropped = (lengths - np.bincount(curve_of[valid], minlength=m)).tolist()
    q_arr, i_arr, di_arr, curve_of = q_arr[valid], i_arr[valid], di_arr[valid], curve_of[valid]
    order = np.lexsort((q_arr, curve_of))  # stable: within a curve, by q, equal q in their order
    q_arr, i_arr, di_arr, curve_of = q_arr[order], i_arr[order], di_arr[order], curve_of[order]
    unique = np.ones(q_arr.shape[0], dtype=bool)
    unique[1:] = (np.diff(q_arr) > 0) | (curve_of[1:] != curve_of[:-1])
    n_duplicates = np.bincount(curve_of[~unique], minlength=m).tolist()
    q_arr, i_arr, di_arr, curve_of = q_arr[unique], i_arr[unique], di_arr[unique], curve_of[unique]
    sizes = np.bincount(curve_of, minlength=m)
    firsts = np.cumsum(sizes) - sizes
    q_first = q_arr[np.minimum(firsts, max(q_arr.shape[0] - 1, 0))].tolist() if q_arr.size else [math.nan] * m
    q_last = q_arr[np.maximum(firsts + sizes - 1, 0)].tolist() if q_arr.size else [math.nan] * m
    inside = (q_arr >= cfg.q_min) & (q_arr <= cfg.q_max)
    n_inside = np.bincount(curve_of[inside], minlength=m).tolist()

    kept = np.zeros(m, dtype=bool)
    notes_kept: list[list[str]] = []
    for j, k in enumerate(given):
        notes: list[str] = []
        if unit_notes[j]:
            notes.append(unit_notes[j])
            if finite_q_max[j] > cfg.q_max:
                notes.append(
                    f"q reaches {finite_q_max[j]:.3g} with no unit given, unusually high for 1/Å: "
                    "if q is in 1/nm, give the unit"
                )
        if not any_finite_i[j]:
            refused[k] = CurveError("all intensities are NaN or infinite")
            continue
        if n_dropped[j]:
            notes.append(f"{n_dropped[j]} point(s) with non-finite or non-positive q or non-finite I were dropped")
        if n_duplicates[j]:
            notes.append(f"{n_duplicates[j]} point(s) with duplicate q were dropped (first kept)")
        size = int(sizes[j])
        if size == 0:
            refused[k] = CurveError("no point has a finite, positive q and a finite intensity")
            continue
        if size < cfg.min_points:
            refused[k] = CurveError(f"only {size} valid point(s); at least {cfg.min_points} are needed")
            continue
        lo, hi = max(q_first[j], cfg.q_min), min(q_last[j], cfg.q_max)
        overlap = math.log10(hi / lo) if hi > lo else 0.0
        if overlap < cfg.min_overlap_decades:
            refused[k] = CurveError(
                f"the data cover q = {q_first[j]:.3g} to {q_last[j]:.3g} 1/Å, which overlaps the model's "
                f"q-domain ({cfg.q_min:g} to {cfg.q_max:g} 1/Å) by {overlap:.2f} decades; at least "
                f"{cfg.min_overlap_decades:g} are needed (is the q unit right?)"
            )
            continue
        if n_inside[j] < size:
            notes.append(f"{size - n_inside[j]} point(s) outside the model's q-domain were ignored")
        if n_inside[j] < cfg.min_points:
            refused[k] = CurveError(
                f"only {n_inside[j]} valid point(s) lie in the model's q-domain; at least {cfg.min_points} are needed"
            )
            continue
        if n_inside[j] < 3:  # only with a config of min_points < 3: a point's neighbours are needed
            refused[k] = CurveError(f"only {n_inside[j]} valid point(s) lie in the model's q-domain; at least 3 are needed")
            continue
        kept[j] = True
        notes_kept.append(notes)

    chosen = inside & kept[curve_of]
    q_arr, i_arr, di_arr, curve_of = q_arr[chosen], i_arr[chosen], di_arr[chosen], curve_of[chosen]
    lengths = np.array([n_inside[j] for j in np.flatnonzero(kept)], dtype=np.int64)
    if lengths.size:
        starts = np.cumsum(lengths) - lengths
        peaks = np.maximum.reduceat(np.abs(i_arr), starts).tolist()
        for start, length, peak in zip(starts.tolist(), lengths.tolist(), peaks):
            if not (_TINY < peak < _HUGE or peak == 0.0):
                part = slice(start, start + length)
                i_arr[part], di_arr[part] = _rescale_extreme(i_arr[part], di_arr[part], peak)
    return _CleanCurves(q_arr, i_arr, di_arr, lengths, [k for j, k in enumerate(given) if kept[j]], notes_kept), refused


#: Beyond these magnitudes intermediate sums and products of intensities over- or underflow.
_HUGE, _TINY = 1e200, 1e-200


def _rescale_extreme(i_arr: np.ndarray, di_arr: np.ndarray, peak: float) -> tuple[np.ndarray, np.ndarray]:
    """I and dI of one curve (shape (points,)) scaled by a power of two when their magnitude ``peak`` = max|I| is
    extreme (the features are scale-free).

    A power of two scales floating-point numbers exactly, and curves with
    1e-200 < max|I| < 1e200 are never rescaled (:func:`_clean_curves`), so the features of every
    ordinary curve are unchanged bit for bit.
    """
    shift = -math.frexp(peak)[1]
    with np.errstate(all="ignore"):  # a dI that over- or underflows becomes unusable and is replaced
        return np.ldexp(i_arr, shift), np.ldexp(di_arr, shift)


def _grouped_medians(values: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(median of ``values`` per group (NaN for an empty group), count per group), groups 0..n_groups-1."""
    order = np.lexsort((values, groups))
    ordered = values[order]
    counts = np.bincount(groups, minlength=n_groups)
    firsts = np.cumsum(counts) - counts
    low = firsts + np.maximum(counts - 1, 0) // 2
    high = firsts + counts // 2
    medians = np.full(n_groups, np.nan)
    some = counts > 0
    medians[some] = 0.5 * (ordered[low[some]] + ordered[np.minimum(high[some], ordered.size - 1)])
    return medians, counts


def scatter_factors(q: np.ndarray, intensity: np.ndarray, d_intensity: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per curve, the factor (curves,) that brings its dI to its own point-to-point scatter (1 where it cannot tell).

    The curves' points are concatenated, each curve's sorted by q (shape (total points,), ``lengths`` (curves,)).
    For every point with two neighbours on each side, all five with I > 0 and a usable dI, log I is compared with
    the cubic in log q through its four neighbours (exact for a power law and for any smooth bend up to third order,
    so the curve's own shape does not count as noise), and the deviation is divided by what the dI predict for it.
    The factor is 1.4826 times the median of that ratio (1 for honest Gaussian error bars, 30 for dI thirty times too
    small), taken twice: over all such points, then over those whose rescaled relative dI is at most
    :data:`MAX_SCATTER_RELATIVE_NOISE` (where log I is nearly Gaussian). The dI are kept (factor 1) where the
    factor is within its own statistical spread of 1 (:data:`SCATTER_SIGNIFICANCE`) or where fewer than
    :data:`MIN_SCATTER_POINTS` points take part; otherwise the factor of dI x c is that of dI over c.
    """
    n_curves = lengths.shape[0]
    if intensity.shape[0] < 5:
        return np.ones(n_curves)
    curve_of = np.repeat(np.arange(n_curves), lengths)
    p = np.arange(2, intensity.shape[0] - 2)
    with np.errstate(all="ignore"):
        relative = d_intensity / intensity
        good = np.isfinite(relative) & (relative > 0) & (intensity > 0)
        ok = curve_of[p - 2] == curve_of[p + 2]
        for shift in (-2, -1, 0, 1, 2):
            ok &= good[p + shift]
        p = p[ok]
        u = np.log(q)
        log_i = np.log(np.where(good, intensity, 1.0))
        nodes = (p - 2, p - 1, p + 1, p + 2)
        # Lagrange weights at u[p] of the cubic through the four neighbours
        weights = []
        for a, j in enumerate(nodes):
            w = np.ones(p.shape[0])
            for b, m in enumerate(nodes):
                if b != a:
                    w *= (u[p] - u[m]) / (u[j] - u[m])
            weights.append(w)
        deviation = log_i[p] - sum(w * log_i[j] for w, j in zip(weights, nodes))
        expected = np.sqrt(relative[p] ** 2 + sum((w * relative[j]) ** 2 for w, j in zip(weights, nodes)))
        ratio = np.abs(deviation) / expected
        largest = np.maximum.reduce([relative[j] for j in (p, *nodes)])
    factors = np.ones(n_curves)
    chosen = np.ones(p.shape[0], dtype=bool)
    for _ in range(2):
        medians, counts = _grouped_medians(ratio[chosen], curve_of[p][chosen], n_curves)
        found = 1.4826 * medians
        usable = (counts >= MIN_SCATTER_POINTS) & np.isfinite(found) & (found > 0)
        factors = np.where(usable, found, 1.0)
        chosen = largest * factors[curve_of[p]] <= MAX_SCATTER_RELATIVE_NOISE
    # Only a disagreement beyond the estimate's own spread counts: the log of a median of n such ratios scatters
    # by about 1.17 / sqrt(n) for independent ones, about 1.7 / sqrt(n) for these overlapping ones; 3 of those.
    with np.errstate(divide="ignore"):
        significant = np.abs(np.log(factors)) > SCATTER_SIGNIFICANCE / np.sqrt(np.maximum(counts, 1))
    return np.where(significant, factors, 1.0)


def _map_onto_grid(curves: _CleanCurves, cfg: PreprocessingConfig) -> list[ModelInput | CurveError]:
    """The model inputs of cleaned curves (:func:`_clean_curves`), all at once: every step runs on the points
    of all curves concatenated (shape (total points,)) or on the grid of all curves (shape (curves, bins)),
    each curve's numbers passing through the same operations as alone. Per curve its
    :class:`ModelInput`, or the :class:`CurveError` refusing it."""
    lengths = curves.lengths
    n_curves, n_bins = lengths.shape[0], cfg.n_bins
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ends = starts + lengths - 1
    q_arr, i_arr, di_arr = curves.q, curves.intensity, curves.d_intensity
    curve_of = np.repeat(np.arange(n_curves), lengths)

    smooth = _running_medians(i_arr, lengths, cfg.median_window)
    i_ref_curve = np.maximum.reduceat(smooth, starts)
    i_ref = i_ref_curve[curve_of]

    # Uncertainties: reported dI where usable, else a local robust scatter; floored.
    residual = i_arr - smooth
    # Local scatter from the deviation of each point from the mean of its two neighbours
    # (excludes the point itself, so it is never exactly zero): sigma * sqrt(3/2) for white noise.
    # The first and last point of a curve take their neighbour's deviation.
    deviation = np.abs(i_arr[1:-1] - 0.5 * (i_arr[:-2] + i_arr[2:]))  # [p - 1]: of point p
    points = np.arange(i_arr.shape[0])
    neighbour_dev = deviation[np.clip(points, starts[curve_of] + 1, ends[curve_of] - 1) - 1]
    local_scatter = 1.4826 / math.sqrt(1.5) * _running_medians(neighbour_dev, lengths, cfg.noise_window)
    sigma = local_scatter.copy()
    usable = np.isfinite(di_arr) & (di_arr > 0)
    if cfg.noise_scale == "scatter":
        di_arr = di_arr * scatter_factors(q_arr, i_arr, di_arr, lengths)[curve_of]
    sigma[usable] = di_arr[usable]
    floor = cfg.relative_noise_floor * np.maximum(np.abs(smooth), cfg.softening * i_ref)
    sigma = np.maximum(sigma, floor)

    x = i_arr / i_ref
    edges = cfg.bin_edges
    bins = np.clip(np.searchsorted(edges, q_arr, side="right") - 1, 0, n_bins - 1)
    grid_bins = curve_of * n_bins + bins  # the bin of each point on the grid of all curves

    # Channel 0: bin-averaged intensity (linear space, so noise around zero averages out), interpolated in log q
    # over the empty bins inside the window as np.interp does it (the same operations).
    counts = np.bincount(grid_bins, minlength=n_curves * n_bins).reshape(n_curves, n_bins)
    sums = np.bincount(grid_bins, weights=x, minlength=n_curves * n_bins).reshape(n_curves, n_bins)
    filled = counts > 0
    log_centres = np.log(cfg.bin_centres)
    columns = np.arange(n_bins)
    covered = (columns >= bins[starts][:, None]) & (columns <= bins[ends][:, None])
    intensity_channel = np.zeros((n_curves, n_bins))
    grid = intensity_channel.reshape(-1)  # the same cells, by their index on the grid of all curves (row-major)
    filled_cells = np.flatnonzero(filled)
    grid[filled_cells] = _transform(sums.reshape(-1)[filled_cells] / counts.reshape(-1)[filled_cells], cfg.softening)
    gap_cells = np.flatnonzero(covered & ~filled)
    if gap_cells.size:
        # The filled cells next to each gap, found among the filled cells in row-major order: a row's first and
        # last covered bins hold points, so the neighbours of a gap are in its own row.
        following = np.searchsorted(filled_cells, gap_cells)
        cell0, cell1 = filled_cells[following - 1], filled_cells[following]
        gaps = gap_cells % n_bins
        x0, x1 = log_centres[cell0 % n_bins], log_centres[cell1 % n_bins]
        y0, y1 = grid[cell0], grid[cell1]
        slope = (y1 - y0) / (x1 - x0)
        value = slope * (log_centres[gaps] - x0) + y0
        bad = np.isnan(value)
        if bad.any():  # np.interp: if we get nan in one direction, try the other
            value[bad] = slope[bad] * (log_centres[gaps][bad] - x1[bad]) + y1[bad]
            still = np.isnan(value) & (y0 == y1)
            value[still] = y0[still]
        grid[gap_cells] = value

    # Channel 2: point-level outliers against the running median.
    z_outlier = residual / sigma
    outlier_channel = _strongest_per_bin(grid_bins, z_outlier, n_curves * n_bins, cfg.z_scale).reshape(n_curves, n_bins)

    # Channel 3: point-to-point jumps in T beyond the local trend (the differences within each curve).
    t_points = _transform(x, cfg.softening)
    sigma_t = sigma / i_ref * _transform_slope(x, cfg.softening)
    within = curve_of[1:] == curve_of[:-1]
    diffs = (t_points[1:] - t_points[:-1])[within]
    trend = _running_medians(diffs, lengths - 1, cfg.median_window + 2)
    z_jump = (diffs - trend) / np.hypot(sigma_t[1:], sigma_t[:-1])[within]
    jump_channel = _strongest_per_bin(grid_bins[1:][within], z_jump, n_curves * n_bins, cfg.z_scale).reshape(n_curves, n_bins)

    features32 = np.empty((n_curves, len(cfg.channels), n_bins), dtype=np.float32)  # each channel rounded to float32 as stored
    features32[:, 0] = intensity_channel
    features32[:, 1] = covered
    features32[:, 2] = outlier_channel
    features32[:, 3] = jump_channel
    features32[:, 2][~covered] = 0.0
    features32[:, 3][~covered] = 0.0
    for c, name in enumerate(cfg.channels[len(CHANNELS):], start=len(CHANNELS)):
        if name == "density":
            features32[:, c] = np.log2(1.0 + counts) / 8.0
        else:  # "noise": the bin's mean log10 relative uncertainty, mapped onto [0, 1]
            relative = sigma / np.maximum(np.abs(smooth), cfg.softening * i_ref)
            level = (np.clip(np.log10(relative), -4.0, 1.0) + 4.0) / 5.0
            level_sums = np.bincount(grid_bins, weights=level, minlength=n_curves * n_bins).reshape(n_curves, n_bins)
            features32[:, c] = np.where(filled, level_sums / np.maximum(counts, 1), 0.0)
    positive = i_ref_curve > 0
    finite_x = np.logical_and.reduceat(np.isfinite(x), starts)
    finite_features = np.isfinite(features32).reshape(n_curves, -1).all(axis=1)
    domain_decades = math.log10(cfg.q_max / cfg.q_min)
    q_first, q_last = q_arr[starts].tolist(), q_arr[ends].tolist()
    out: list[ModelInput | CurveError] = []
    for k, notes in enumerate(curves.notes):
        if not positive[k]:
            out.append(CurveError("all intensities are zero or negative: this is not a scattering curve (check the background subtraction)"))
        elif not finite_x[k]:
            out.append(CurveError(
                "the intensities span more than 300 orders of magnitude (a spike far above the rest of the curve): "
                "check the data for corrupt values"
            ))
        elif not finite_features[k]:
            out.append(CurveError(
                "the intensities cannot be represented on the model grid: they span too many orders of magnitude "
                "(check the data for corrupt values)"
            ))
        else:
            coverage = float(math.log10(q_last[k] / q_first[k]) / domain_decades)
            out.append(ModelInput(
                features=features32[k],
                coverage=min(max(coverage, 0.0), 1.0),
                q_window=(q_first[k], q_last[k]),
                n_points=int(lengths[k]),
                notes=notes,
            ))
    return out


def prepare_batch(
    curves: Sequence[tuple[Any, Any, Any, str | None]],
    config: PreprocessingConfig | None = None,
) -> tuple[np.ndarray, list[ModelInput | CurveError]]:
    """Map many curves; a refused curve never stops the others.

    ``curves`` holds (q, I, dI or None, q_unit) tuples. Returns the stacked
    features of the accepted curves, shape (accepted, channels, bins) float32,
    and per input curve either its :class:`ModelInput` or its :class:`CurveError`.
    """
    cfg = config or PreprocessingConfig()
    outcomes = prepare_many(curves, cfg)
    accepted = [o.features for o in outcomes if isinstance(o, ModelInput)]
    batch = np.stack(accepted) if accepted else np.zeros((0, *cfg.input_shape), dtype=np.float32)
    return np.ascontiguousarray(batch, dtype=np.float32), outcomes
