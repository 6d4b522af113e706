"""Chunked, resumable, deterministic simulation on a real Dask cluster (loopback)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("sasmodels")

from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES, class_index
from sasview_bnn_trainer.simulation import runner
from sasview_bnn_trainer.simulation.classes import SIMULATOR_VERSION
from sasview_bnn_trainer.simulation.runner import (
    PartsFolder,
    SimulationConfigError,
    SimulationPlan,
    code_version,
    encode_chunk,
    regenerate_curve,
    resolve_classes,
    simulate_to_file,
    simulator_source_digest,
)
from sasview_bnn_trainer.simulation.preview import KEY_CRITERIA, contact_sheet, pick_examples
from sasview_bnn_trainer.simulation.store import CurveReader

N, CHUNK = 42, 8  # 6 chunks, the last one short


@pytest.fixture(scope="module", autouse=True)
def merge_two_chunks_at_a_time():
    """Merge groups of 2 chunks (instead of ~10,000 curves) so that small runs merge in several steps."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "MERGE_GROUP_CURVES", 2 * CHUNK)
        yield


@pytest.fixture(scope="module")
def scheduler():
    """A real scheduler and two single-threaded worker processes on 127.0.0.1."""
    with distributed.LocalCluster(
        host="127.0.0.1", n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def reference(tmp_path_factory, scheduler):
    """The run N curves, seed 11, chunk size CHUNK, made on the 2-worker cluster."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    return simulate_to_file(N, out, 11, scheduler=scheduler, chunk_size=CHUNK, progress=False)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _curves(path) -> list:
    with CurveReader(path) as reader:
        return reader.read(0, len(reader))


def _stored(meta: dict) -> dict:
    """Metadata as the store keeps it: NaN numbers and empty strings mean "absent"."""
    return {k: v for k, v in meta.items() if v != "" and not (isinstance(v, float) and np.isnan(v))}


def _assert_same_curves(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.label == y.label and x.q_unit == y.q_unit
        np.testing.assert_equal(x.slit_length, y.slit_length)
        for name in ("q", "intensity", "d_intensity", "dq"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
        for group in ("params", "instrument", "criteria"):
            assert _stored(getattr(x, group)) == _stored(getattr(y, group))


@pytest.mark.parametrize("classes", [tuple(range(7)), (0, 5), (2,), (1, 3, 4, 6)])
def test_label_plan_is_balanced_and_independent_of_chunking(classes):
    plan = SimulationPlan(n_curves=103, seed=4, classes=classes, chunk_size=10)
    labels = plan.labels(0, 103)
    counts = np.bincount(labels, minlength=7)[list(classes)]
    assert set(np.unique(labels)) == set(classes) and counts.max() - counts.min() <= 1
    pieces = np.concatenate([plan.labels(a, b) for a, b in [(0, 3), (3, 17), (17, 18), (18, 103)]])
    np.testing.assert_array_equal(pieces, labels)
    if len(classes) > 2:
        assert not np.array_equal(labels, SimulationPlan(103, 5, classes, 10).labels(0, 103))


def test_resolve_classes_names_and_errors():
    assert resolve_classes() == tuple(range(7))
    assert resolve_classes(["artefact", "clean", "ordered"], ["ordered"]) == (0, 6)
    with pytest.raises(SimulationConfigError, match="unknown class 'glass'.*clean, aggregation"):
        resolve_classes(["glass"])
    with pytest.raises(SimulationConfigError, match="no class left"):
        resolve_classes(["clean"], ["clean"])


def test_file_records_the_run_and_every_curve_can_be_regenerated(reference):
    with CurveReader(reference) as reader:
        assert len(reader) == N and reader.seed == 11
        assert reader.classes == list(CLASS_NAMES)
        assert reader.attrs["code_version"].endswith(f"+sim.{SIMULATOR_VERSION}")
        assert reader.config["n_curves"] == N and reader.config["chunk_size"] == CHUNK
        assert reader.config["code_version"] == code_version()
        assert reader.config["simulator_source_sha256"] == simulator_source_digest()
        # Every class is planned equally often; a mixture's primary label is its most visible anomaly.
        planned = np.bincount([class_index(name) for name in reader.column("params", "planned_class")], minlength=7)
        assert planned.min() == N // 7 and set(reader.labels) == set(range(7))
        curves = reader.read(0, N)
    assert not PartsFolder(reference).path.exists()
    plan = SimulationPlan(N, 11, tuple(range(7)), CHUNK)
    for i in (0, 9, N - 1):  # one curve from the first, a middle and the (short) last chunk
        _assert_same_curves([regenerate_curve(plan, i)], [curves[i]])


def test_same_seed_gives_the_same_file_on_one_embedded_worker(tmp_path, reference):
    out = simulate_to_file(N, tmp_path / "one.h5", 11, workers=1, chunk_size=CHUNK, progress=False)
    assert _sha(out) == _sha(reference)
    assert [p.name for p in tmp_path.iterdir()] == ["one.h5"]


def test_curves_do_not_depend_on_chunk_size_but_on_seed(tmp_path, scheduler, reference):
    other_chunks = simulate_to_file(N, tmp_path / "c.h5", 11, scheduler=scheduler, chunk_size=5, progress=False)
    _assert_same_curves(_curves(other_chunks), _curves(reference))
    other_seed = simulate_to_file(14, tmp_path / "s.h5", 12, scheduler=scheduler, chunk_size=CHUNK, progress=False)
    assert not any(np.array_equal(a.intensity, b.intensity) for a, b in zip(_curves(other_seed), _curves(reference)))


def test_class_subset_minus_excluded_class(tmp_path, scheduler):
    out = simulate_to_file(
        9, tmp_path / "sub.h5", 3, scheduler=scheduler, classes=["ordered", "clean", "artefact"],
        exclude_classes=["ordered"], chunk_size=4, progress=False,
    )
    with CurveReader(out) as reader:
        assert reader.classes == ["clean", "artefact"]
        assert sorted(np.bincount(reader.labels, minlength=7)[[0, 6]]) == [4, 5]
        assert set(reader.labels) == {0, 6}


def test_resume_keeps_finished_parts_and_cleans_torn_files(tmp_path, scheduler, reference):
    """A cut-off run: chunks 0 and 2 finished, a torn part and a half merge left behind."""
    out = tmp_path / "ref.h5"
    plan = SimulationPlan(N, 11, tuple(range(7)), CHUNK)
    parts = PartsFolder(out)
    parts.create(plan.config(code_version(), simulator_source_digest()))
    parts.write_part(0, encode_chunk(plan, 0).data)
    # Chunk 2 planted from another seed: if resume recomputed it, the file would equal the reference.
    parts.write_part(2, encode_chunk(SimulationPlan(N, 99, tuple(range(7)), CHUNK), 2).data)
    (parts.path / "chunk_000003.h5.tmp").write_bytes(b"torn")
    parts.merged_tmp.write_bytes(b"half a merge")

    with pytest.raises(SimulationConfigError, match="interrupted run; pass --resume"):
        simulate_to_file(N, out, 11, scheduler=scheduler, chunk_size=CHUNK, progress=False)
    with pytest.raises(SimulationConfigError, match="other settings.*seed: 11 there, 12 now"):
        simulate_to_file(N, out, 12, scheduler=scheduler, chunk_size=CHUNK, resume=True, progress=False)
    assert sorted(p.name for p in parts.path.iterdir()) == [
        "chunk_000000.h5", "chunk_000002.h5", "chunk_000003.h5.tmp", "manifest.json", "merged.h5.tmp"
    ]

    simulate_to_file(N, out, 11, scheduler=scheduler, chunk_size=CHUNK, resume=True, progress=False)
    assert not parts.path.exists()
    got, ref = _curves(out), _curves(reference)
    lo, hi = plan.chunk_bounds(2)
    _assert_same_curves(got[:lo] + got[hi:], ref[:lo] + ref[hi:])
    assert not any(np.array_equal(a.intensity, b.intensity) for a, b in zip(got[lo:hi], ref[lo:hi]))
    # Resuming a finished run is a no-op.
    before = out.stat().st_mtime_ns
    simulate_to_file(N, out, 11, scheduler=scheduler, chunk_size=CHUNK, resume=True, progress=False)
    assert out.stat().st_mtime_ns == before


def test_resume_refuses_parts_made_by_other_simulator_code(tmp_path):
    out = tmp_path / "c.h5"
    plan = SimulationPlan(N, 11, tuple(range(7)), CHUNK)
    PartsFolder(out).create(plan.config(code_version(), "0123456789abcdef"))
    with pytest.raises(SimulationConfigError, match="simulator_source_sha256: '0123456789abcdef' there"):
        simulate_to_file(N, out, 11, chunk_size=CHUNK, resume=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5.parts"]


def test_config_attribute_is_json_with_the_settings(reference):
    with CurveReader(reference) as reader:
        config = json.loads(reader.attrs["config"])
    assert {"n_curves", "seed", "classes", "chunk_size", "code_version", "simulator_source_sha256", "labels", "rng"} <= set(config)


def test_contact_sheet_shows_each_class_its_key_criteria_and_negative_points(reference):
    with CurveReader(reference) as reader:
        examples = pick_examples(reader, per_class=3)
    assert sorted(examples) == list(range(7)) and all(len(v) == 3 for v in examples.values())
    fig = contact_sheet(examples)
    assert len(fig.axes) == 21
    panels = [(ax, curve) for ax, (_, curve) in zip(fig.axes, [e for label in sorted(examples) for e in examples[label]])]
    for ax, curve in panels:
        name = CLASS_NAMES[curve.label]
        assert ax.get_title().startswith(f"{name}  #")
        text = "\n".join(t.get_text() for t in ax.texts)
        first_key = next(k for k in KEY_CRITERIA[name] if k in curve.criteria)
        assert f"{first_key} = {curve.criteria[first_key]:.3g}" in text
        negative = int((curve.intensity <= 0).sum())
        red = [line for line in ax.get_lines() if line.get_marker() == "v"]
        assert len(red) == (1 if negative else 0)
        if negative:
            assert f"{negative} pts I<=0" in text
    assert any(CLASS_NAMES[c.label] == "oversubtracted" and (c.intensity <= 0).any() for _, c in panels)
