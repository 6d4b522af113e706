"""Curve file -> model inputs, through the shared preprocessing, streamed and cached.

A curve file written by :class:`~sasview_bnn_trainer.simulation.store.CurveWriter`
is mapped with :func:`sasview_bnn_plugin.core.preprocessing.prepare_many` (``prepare_curve`` of
many curves at once: the one preprocessing used at inference too) into a *features file* next to it
(``<data>.features.h5`` by default)::

    /features      (M, channels, bins) float32   accepted curves only
    /labels        (M,) int8                     taxonomy index (the primary class)
    /anomalies     (M, 6) int8                   1 where anomaly k (classes 1..6) is present
    /source_index  (M,) int64                    row of the curve in the curve file
    /coverage      (M,) float64                  fraction of the model q-domain covered (log q)
    /q_window      (M, 2) float64                q range used, 1/Å
    attrs: preprocessing (JSON), source (path), source_size, source_mtime_ns,
           n_curves, n_refused, refusals (JSON reason -> count), seed, code_version
           (every class is kept; train/validation splits and left-out classes are
           decided at training time, see :func:`split_rows`)

The file is built chunk by chunk, so a 1,000,000-curve set never has to fit in
memory (about 4 KiB per curve on disk). Curves the preprocessing refuses are
counted by reason and skipped. A cached file is reused only when the curve file
and the preprocessing settings are unchanged.

:class:`FeatureFile` reads it back in shuffled blocks of contiguous rows
(bounded memory, deterministic for a seed).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from sasview_bnn_plugin.core.preprocessing import CHANNELS, CurveError, PreprocessingConfig, prepare_many
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES, CLEAN_INDEX, class_index

ANOMALY_NAMES: tuple[str, ...] = CLASS_NAMES[1:]
N_ANOMALIES = len(ANOMALY_NAMES)

from .simulation.criteria import visibility_key
from .simulation.store import CurveReader

FEATURES_FORMAT = "sasview-bnn-features"
#: Curves mapped per call of the shared preprocessing (``prepare_many``: the features of one curve at a time, faster).
PREPARE_BATCH = 256
#: 3: the anomalies' visibility scores (``visibility``) are stored too.
FEATURES_FORMAT_VERSION = 3


def recorded_visibility(criteria: dict[str, float]) -> np.ndarray:
    """The visibility scores (6,) float64 a simulated curve's criteria record for the anomalies (classes 1..6),
    NaN for an anomaly without one: the one reader of ``criteria[visibility_key(name)]``."""
    return np.array([criteria.get(visibility_key(name), np.nan) for name in ANOMALY_NAMES], dtype=np.float64)


def anomalies_present(label: int, criteria: dict[str, float]) -> np.ndarray:
    """Presence (6,) int8 of the anomalies (classes 1..6) of a simulated curve.

    Simulator 2.0 records a visibility score ``criteria[visibility_key(name)]``
    for every anomaly present (docs/taxonomy.md, version 2); curves of older
    simulators show exactly their label's anomaly (none for ``clean``).
    """
    out = np.zeros(N_ANOMALIES, dtype=np.int8)
    if "n_anomalies" in criteria:
        out[:] = np.isfinite(recorded_visibility(criteria))
    elif label != CLEAN_INDEX:
        out[label - 1] = 1
    return out


def visibility_scores(criteria: dict[str, float]) -> np.ndarray:
    """Visibility scores (6,) int32 of the anomalies (classes 1..6) of a simulated curve: the points each anomaly
    moves by the visibility rule (docs/taxonomy.md), 0 for an anomaly that is absent (or a curve of a simulator that
    recorded none)."""
    scores = recorded_visibility(criteria)
    return np.where(np.isfinite(scores), np.maximum(scores, 0.0), 0.0).round().astype(np.int32)


def default_features_path(data_path: str | Path, config: PreprocessingConfig | None = None, kind: str = "features") -> Path:
    """``DATA.h5`` -> ``DATA.features.h5`` (``kind`` "eval-features": ``DATA.eval-features.h5``) next to the data;
    with extra input channels (``config.channels``) their names join the suffix, ``DATA.features+density+noise.h5``,
    and a number of q bins other than the default 256 too, ``DATA.features+bins512.h5``, and dI rescaled to the
    scatter, ``DATA.features+dI-scatter.h5``, so that files of different inputs never replace each other."""
    p = Path(data_path)
    extras = () if config is None else config.channels[len(CHANNELS):]
    if config is not None and config.n_bins != PreprocessingConfig.n_bins:
        extras = (*extras, f"bins{config.n_bins}")
    if config is not None and config.noise_scale != PreprocessingConfig.noise_scale:
        extras = (*extras, f"dI-{config.noise_scale}")
    return p.with_name(p.stem + "." + "+".join((kind, *extras)) + ".h5")


def _refusal_reason(err: CurveError) -> str:
    """A refusal message with its numbers removed, so equal causes count together."""
    return re.sub(r"[-+]?\d[\d.eE+-]*", "#", str(err))


def _prepare_chunk(args: tuple[str, int, int, str]) -> tuple[int, dict[str, np.ndarray], Counter]:
    """Preprocess curves start..stop-1 of a curve file (runs in worker processes too)."""
    path, start, stop, cfg_json = args
    cfg = PreprocessingConfig.from_json(cfg_json)
    feats, labels, index, coverage, window, present, visible = [], [], [], [], [], [], []
    refusals: Counter = Counter()
    with CurveReader(path) as reader:
        curves = list(reader.read(start, stop))
    for first in range(0, len(curves), PREPARE_BATCH):
        batch = curves[first : first + PREPARE_BATCH]
        outcomes = prepare_many([(c.q, c.intensity, c.d_intensity, c.q_unit) for c in batch], cfg)
        for k, (curve, prepared) in enumerate(zip(batch, outcomes), start=start + first):
            if isinstance(prepared, CurveError):
                refusals[_refusal_reason(prepared)] += 1
                continue
            feats.append(prepared.features)
            labels.append(curve.label)
            present.append(anomalies_present(curve.label, curve.criteria))
            visible.append(visibility_scores(curve.criteria))
            index.append(k)
            coverage.append(prepared.coverage)
            window.append(prepared.q_window)
    shape = (0, *cfg.input_shape)
    out = {
        "features": np.stack(feats) if feats else np.zeros(shape, np.float32),
        "labels": np.asarray(labels, dtype=np.int8),
        "anomalies": np.asarray(present, dtype=np.int8).reshape(-1, N_ANOMALIES),
        "visibility": np.asarray(visible, dtype=np.int32).reshape(-1, N_ANOMALIES),
        "source_index": np.asarray(index, dtype=np.int64),
        "coverage": np.asarray(coverage, dtype=np.float64),
        "q_window": np.asarray(window, dtype=np.float64).reshape(-1, 2),
    }
    return start, out, refusals


def _cache_is_valid(features_path: Path, data_path: Path, cfg: PreprocessingConfig) -> bool:
    if not features_path.exists():
        return False
    stat = data_path.stat()
    try:
        with h5py.File(features_path, "r") as f:
            a = f.attrs
            return (
                a.get("format") == FEATURES_FORMAT
                and int(a.get("format_version", 0)) == FEATURES_FORMAT_VERSION
                and a.get("complete", False)
                and a.get("preprocessing") == cfg.to_json()
                and int(a.get("source_size", -1)) == stat.st_size
                and int(a.get("source_mtime_ns", -1)) == stat.st_mtime_ns
            )
    except OSError:
        return False


def build_features(
    data_path: str | Path,
    features_path: str | Path | None = None,
    config: PreprocessingConfig | None = None,
    *,
    chunk_size: int = 2048,
    workers: int = 1,
    progress: bool = True,
    rebuild: bool = False,
) -> Path:
    """Preprocess every curve of a curve file into a features file; return its path.

    Reuses an existing features file built from the same curve file with the same
    preprocessing settings unless ``rebuild``. ``workers`` > 1 preprocesses
    chunks in that many processes. Refused curves are counted per reason in the
    ``refusals`` attribute and skipped.
    """
    data_path = Path(data_path)
    if not data_path.exists():
        raise FileNotFoundError(f"the curve file {data_path} does not exist")
    cfg = config or PreprocessingConfig()
    out_path = Path(features_path) if features_path else default_features_path(data_path, cfg)
    if not rebuild and _cache_is_valid(out_path, data_path, cfg):
        return out_path
    try:
        reader = CurveReader(data_path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{data_path} cannot be read as a sasview-bnn curve file: {err}") from None
    with reader:
        n = len(reader)
        attrs = dict(reader.attrs)
    tmp_path = out_path.with_name(out_path.name + ".partial")
    bins = cfg.input_shape
    refusals: Counter = Counter()
    tasks = [(str(data_path), s, min(s + chunk_size, n), cfg.to_json()) for s in range(0, n, chunk_size)]
    with h5py.File(tmp_path, "w") as f:
        f.attrs["format"] = FEATURES_FORMAT
        f.attrs["format_version"] = FEATURES_FORMAT_VERSION
        f.attrs["complete"] = False
        ds = {
            "features": f.create_dataset(
                "features", shape=(0, *bins), maxshape=(None, *bins), dtype=np.float32, chunks=(256, *bins)
            ),
            "labels": f.create_dataset("labels", shape=(0,), maxshape=(None,), dtype=np.int8, chunks=(65536,)),
            "anomalies": f.create_dataset("anomalies", shape=(0, N_ANOMALIES), maxshape=(None, N_ANOMALIES), dtype=np.int8,
                                          chunks=(65536, N_ANOMALIES)),
            "visibility": f.create_dataset("visibility", shape=(0, N_ANOMALIES), maxshape=(None, N_ANOMALIES), dtype=np.int32,
                                           chunks=(65536, N_ANOMALIES)),
            "source_index": f.create_dataset("source_index", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(65536,)),
            "coverage": f.create_dataset("coverage", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(65536,)),
            "q_window": f.create_dataset("q_window", shape=(0, 2), maxshape=(None, 2), dtype=np.float64, chunks=(65536, 2)),
        }

        def store(out: dict[str, np.ndarray]) -> None:
            for name, values in out.items():
                d = ds[name]
                m = d.shape[0]
                d.resize(m + values.shape[0], axis=0)
                d[m:] = values

        bar = tqdm(total=n, desc="preprocessing", unit="curve", disable=not progress)
        if workers > 1 and len(tasks) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for (start, out, refused), task in zip(pool.map(_prepare_chunk, tasks), tasks):
                    store(out)
                    refusals.update(refused)
                    bar.update(task[2] - task[1])
        else:
            for task in tasks:
                _, out, refused = _prepare_chunk(task)
                store(out)
                refusals.update(refused)
                bar.update(task[2] - task[1])
        bar.close()
        stat = data_path.stat()
        f.attrs["preprocessing"] = cfg.to_json()
        f.attrs["source"] = str(data_path.resolve())
        f.attrs["source_size"] = stat.st_size
        f.attrs["source_mtime_ns"] = stat.st_mtime_ns
        f.attrs["n_curves"] = n
        f.attrs["n_refused"] = int(sum(refusals.values()))
        f.attrs["refusals"] = json.dumps(dict(refusals.most_common()))
        f.attrs["seed"] = int(attrs.get("seed", -1))
        f.attrs["code_version"] = str(attrs.get("code_version", ""))
        f.attrs["simulation_config"] = str(attrs.get("config", "{}"))
        f.attrs["complete"] = True
    os.replace(tmp_path, out_path)
    return out_path


@dataclass(frozen=True)
class FeatureSummary:
    """What a features file holds: curve counts and the data's provenance."""

    n_curves: int
    n_accepted: int
    n_refused: int
    refusals: dict[str, int]
    seed: int
    code_version: str
    preprocessing: str


class FeatureFile:
    """Read access to a features file: labels in memory, features by row blocks.

    ``labels`` has shape (M,) for the M accepted curves.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f = h5py.File(self.path, "r")
        if self._f.attrs.get("format") != FEATURES_FORMAT or not self._f.attrs.get("complete", False):
            self._f.close()
            raise ValueError(f"{self.path} is not a complete sasview-bnn features file")
        self.features: h5py.Dataset = self._f["features"]
        self.labels: np.ndarray = self._f["labels"][:].astype(np.int64)
        #: Anomalies present, shape (M, 6) int64 (1 = present), classes 1..6 in taxonomy order.
        self.anomalies: np.ndarray = self._f["anomalies"][:].astype(np.int64)
        #: Visibility scores of the anomalies, shape (M, 6) int64 (points moved; 0 = absent), as :attr:`anomalies`.
        self.visibility: np.ndarray = self._f["visibility"][:].astype(np.int64)
        self.source_index: np.ndarray = self._f["source_index"][:]
        a = self._f.attrs
        self.summary = FeatureSummary(
            n_curves=int(a["n_curves"]),
            n_accepted=int(self.labels.shape[0]),
            n_refused=int(a["n_refused"]),
            refusals=json.loads(a["refusals"]),
            seed=int(a["seed"]),
            code_version=str(a["code_version"]),
            preprocessing=str(a["preprocessing"]),
        )

    def __enter__(self) -> "FeatureFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def column(self, name: str) -> np.ndarray:
        """``coverage`` (M,) or ``q_window`` (M, 2) for all accepted curves."""
        return self._f[name][:]

    def read_rows(self, rows: np.ndarray, block_rows: int = 32768) -> np.ndarray:
        """Features of the given rows (any order), shape (len(rows), channels, bins) float32.

        The file is read in contiguous spans of at most ``block_rows`` rows, so
        scattered rows never pull in more than one span at a time.
        """
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.size, *self.features.shape[1:]), np.float32)
        if rows.size == 0:
            return out
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        start = 0
        while start < sorted_rows.size:
            lo = int(sorted_rows[start])
            stop = int(np.searchsorted(sorted_rows, lo + block_rows, side="left"))
            hi = int(sorted_rows[stop - 1]) + 1
            out[order[start:stop]] = self.features[lo:hi][sorted_rows[start:stop] - lo]
            start = stop
        return out

    def iter_batches(
        self,
        rows: np.ndarray,
        batch_size: int,
        *,
        shuffle_seed: int | None = None,
        block_rows: int = 32768,
        with_anomalies: bool = False,
        with_visibility: bool = False,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (features (b, channels, bins) float32, labels (b,) int64) over ``rows``.

        With ``with_anomalies`` the labels are (b, 7) int64: column 0 the
        primary class, columns 1..6 the anomalies present (0/1); with
        ``with_visibility`` too, (b, 13): columns 7..12 the anomalies' visibility scores.

        The file is read in blocks of at most ``block_rows`` consecutive rows
        (about 128 MiB for 32768 rows), so memory stays bounded. With
        ``shuffle_seed`` the block order and the rows within a block are shuffled
        (deterministically for the seed); without it rows come in file order.
        """
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        if rows.size == 0:
            return
        block_ids = rows // block_rows
        starts = np.searchsorted(block_ids, np.unique(block_ids))
        groups = np.split(rows, starts[1:])
        rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
        if rng is not None:
            groups = [groups[i] for i in rng.permutation(len(groups))]
        carry_x: np.ndarray | None = None
        carry_y: np.ndarray | None = None
        for group in groups:
            x = self.read_rows(group)
            if with_anomalies:
                parts = [self.labels[group], self.anomalies[group]] + ([self.visibility[group]] if with_visibility else [])
                y = np.column_stack(parts)
            else:
                y = self.labels[group]
            if rng is not None:
                perm = rng.permutation(group.size)
                x, y = x[perm], y[perm]
            if carry_x is not None:
                x, y = np.concatenate([carry_x, x]), np.concatenate([carry_y, y])
                carry_x = carry_y = None
            n_full = (x.shape[0] // batch_size) * batch_size
            for s in range(0, n_full, batch_size):
                yield x[s : s + batch_size], y[s : s + batch_size]
            if n_full < x.shape[0]:
                carry_x, carry_y = x[n_full:], y[n_full:]
        if carry_x is not None and carry_x.shape[0]:
            yield carry_x, carry_y


def split_rows(
    labels: np.ndarray,
    val_fraction: float,
    seed: int,
    exclude: Sequence[int] = (),
    max_train: int | None = None,
    anomalies: np.ndarray | None = None,
    drop: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random train/validation split of feature rows, excluded classes removed.

    Returns (train_rows, val_rows), sorted row indices. The split depends only on
    the number of rows and the seed, so excluding a class does not reshuffle the rest.
    ``max_train`` keeps a seeded random subset of that many training rows
    (validation rows are unchanged). With ``anomalies`` (M, 6), a row is
    excluded when an excluded class is its primary class *or* present as a
    secondary anomaly (a left-out class must be unseen, not just never primary).
    ``drop`` (M,) bool removes further rows from both parts (e.g. every curve
    holding a particle of a left-out shape family, see :func:`family_membership`).
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"the validation fraction must lie between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng([seed, 0x5A11D])
    is_val = rng.random(labels.shape[0]) < val_fraction
    excluded = np.asarray(list(exclude), dtype=np.int64)
    keep = ~np.isin(labels, excluded)
    if drop is not None:
        keep &= ~np.asarray(drop, dtype=bool)
    if anomalies is not None and excluded.size:
        keep &= ~np.any(anomalies[:, excluded[excluded > 0] - 1] > 0, axis=1)
    train = np.flatnonzero(keep & ~is_val)
    if max_train is not None and train.size > max_train:
        train = np.sort(np.random.default_rng([seed, 0x5EB5E7]).choice(train, max_train, replace=False))
    return train, np.flatnonzero(keep & is_val)


#: Columns of a curve file's ``params`` that name a particle shape (the curve's own, a bimodal mixture's two).
SHAPE_COLUMNS: tuple[str, ...] = ("shape", "small_shape", "large_shape")


def leave_out_vocabulary() -> dict[str, tuple[str, ...]]:
    """What a leave-family-out run can leave out, by axis of the simulator's physics.

    ``""`` (bare names): particle shape families (:data:`~sasview_bnn_trainer.simulation.shapes.FAMILIES`);
    ``"lattice"``, ``"structure_factor"``, ``"artefact"``: the lattices of ordered phases, the structure
    factors of interacting particles and the kinds of instrument/reduction fault, written ``AXIS:VALUE``
    (``lattice:hexagonal``, ``structure_factor:stickyhardsphere``, ``artefact:edge_points``). Each axis is
    the curve file's ``params`` column of that name.
    """
    from .simulation import specs
    from .simulation.shapes import FAMILIES

    return {"": FAMILIES, "lattice": tuple(specs.LATTICES), "structure_factor": tuple(specs.STRUCTURE_FACTORS),
            "artefact": tuple(specs.ARTEFACTS)}


def check_leave_out(name: str) -> str:
    """Return ``name`` if a leave-family-out run can leave it out (see :func:`leave_out_vocabulary`), else raise ValueError."""
    vocabulary = leave_out_vocabulary()
    axis, _, value = name.rpartition(":")
    if axis not in vocabulary:
        raise ValueError(f"cannot leave out {name!r}: {axis!r} is not an axis of the simulator; use a shape family "
                         f"({', '.join(vocabulary[''])}) or one of " + ", ".join(f"{a}:NAME" for a in vocabulary if a))
    if value not in vocabulary[axis]:
        what = f"{axis} {value!r}" if axis else f"shape family {value!r}"
        raise ValueError(f"unknown {what}; choose among {', '.join(vocabulary[axis])}")
    return name


def family_membership(data_path: str | Path, source_index: np.ndarray | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """Which shape families each curve's particles belong to, for leave-family-out tests.

    Returns (families, member) with ``member`` (M, n_families) bool: True where
    any of the curve's particles (:data:`SHAPE_COLUMNS`) is of that family
    (:data:`~sasview_bnn_trainer.simulation.shapes.FAMILIES`). ``source_index``
    picks curve-file rows (a features file's ``source_index``); default: all rows.
    Curves without a particle shape (lattices of ordered phases) belong to no family.
    """
    from .simulation.shapes import FAMILIES, SHAPES_BY_NAME

    index = {family: k for k, family in enumerate(FAMILIES)}
    with CurveReader(data_path) as reader:
        columns = [reader.column("params", c) for c in SHAPE_COLUMNS if c in reader.columns("params")]
        n = len(reader)
    rows = np.arange(n) if source_index is None else np.asarray(source_index, dtype=np.int64)
    member = np.zeros((rows.size, len(FAMILIES)), dtype=bool)
    for column in columns:
        names = column[rows]
        for name in set(names.tolist()):
            spec = SHAPES_BY_NAME.get(name)
            if spec is not None:
                member[names == name, index[spec.family]] = True
    return FAMILIES, member


def leave_out_membership(data_path: str | Path, names: Sequence[str], source_index: np.ndarray | None = None) -> np.ndarray:
    """Which curves show each left-out variant of the physics, for leave-family-out tests.

    ``names`` as :func:`check_leave_out` accepts them (``chain``, ``lattice:hexagonal``,
    ``structure_factor:stickyhardsphere``, ``artefact:edge_points``). Returns (M, len(names)) bool:
    a curve shows a shape family when any of its particles is of it (:func:`family_membership`), and
    ``AXIS:VALUE`` when its ``params`` column AXIS reads VALUE (an artefact laid on a curve of any class
    as a secondary anomaly counts too). ``source_index`` picks curve-file rows; default: all rows.
    """
    names = [check_leave_out(n) for n in names]
    with CurveReader(data_path) as reader:
        n = len(reader)
        params = set(reader.columns("params"))
        rows = np.arange(n) if source_index is None else np.asarray(source_index, dtype=np.int64)
        member = np.zeros((rows.size, len(names)), dtype=bool)
        for k, name in enumerate(names):
            axis, _, value = name.rpartition(":")
            if axis and axis in params:
                member[:, k] = reader.column("params", axis)[rows] == value
    if any(":" not in name for name in names):
        families, shapes = family_membership(data_path, source_index)
        for k, name in enumerate(names):
            if ":" not in name:
                member[:, k] = shapes[:, families.index(name)]
    return member


def run_split(data: Mapping[str, Any], features: "FeatureFile") -> tuple[np.ndarray, np.ndarray]:
    """(train_rows, val_rows) of a training run: the rows ``fit`` used, from the ``data`` of its run record
    (validation fraction, split seed, ``max_train``, the classes and the families left out).

    ``features`` is the run's features file. Export, the studies and every other reader of a run take its rows here,
    so that a left-out family's curves never enter a run's novelty bank or calibration curves."""
    drop = None
    if data.get("excluded_families"):
        drop = leave_out_membership(data["path"], data["excluded_families"], features.column("source_index")).any(axis=1)
    excluded = [class_index(n) for n in data.get("excluded_classes") or []]
    return split_rows(features.labels, data["val_fraction"], data["split_seed"], excluded, data.get("max_train"),
                      features.anomalies, drop)
