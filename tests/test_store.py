"""HDF5 round trip of simulated curves (writer -> streaming reader)."""

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from sasview_bnn_trainer.simulation.record import SimulatedCurve
from sasview_bnn_trainer.simulation.store import CurveReader, CurveWriter


def _curve(k: int, n: int, rng: np.random.Generator) -> SimulatedCurve:
    q = np.sort(rng.uniform(0.01, 0.5, n))
    return SimulatedCurve(
        label=k % 7,
        q=q,
        intensity=rng.normal(size=n),
        d_intensity=rng.uniform(0.1, 1, n),
        dq=np.full(n, np.nan) if k % 2 else 0.05 * q,
        q_unit="1/nm" if k % 3 == 0 else "1/A",
        slit_length=0.1 if k % 2 else float("nan"),
        params={"model": "sphere" if k < 3 else "cylinder", "radius": 10.0 + k, **({"length": 5.0} if k >= 3 else {})},
        instrument={"n_points": float(n)},
        criteria={"criterion": 2.0 * k},
    )


def test_round_trip_in_two_appends(tmp_path):
    rng = np.random.default_rng(0)
    records = [_curve(k, 30 + 7 * k, rng) for k in range(6)]
    path = tmp_path / "c.h5"
    with CurveWriter(path, seed=5, code_version="t", classes=["a"], config={"x": 1}) as w:
        w.append(records[:3])
        w.append(records[3:])
    with CurveReader(path) as r:
        assert len(r) == 6 and r.seed == 5 and r.config == {"x": 1}
        back = [c for chunk in r.iter_chunks(4) for c in chunk]
        assert np.isnan(r.column("params", "length")[:3]).all()
    for a, b in zip(records, back):
        assert a.label == b.label and a.q_unit == b.q_unit
        for name in ("q", "intensity", "d_intensity", "dq"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_equal(a.slit_length, b.slit_length)
        assert a.params == b.params and a.instrument == b.instrument and a.criteria == b.criteria


def test_append_files_equals_appending_the_records(tmp_path):
    """Merging part files column by column gives the same curves as appending the records."""
    import io

    rng = np.random.default_rng(1)
    records = [_curve(k, 30 + 7 * k, rng) for k in range(7)]
    records[5].params["note"] = "large"  # a column first seen in the last part, text and number mixed
    records[6].params["note"] = 2.0
    records[6].criteria = {}  # a part without some columns
    parts = []
    for i, (a, b) in enumerate([(0, 3), (3, 5), (5, 7)]):
        buffer = io.BytesIO()  # parts are built in memory, as Dask workers do
        with CurveWriter(buffer, seed=5, code_version="t", classes=["a"], config={}) as w:
            w.append(records[a:b])
        parts.append(tmp_path / f"part{i}.h5")
        parts[-1].write_bytes(buffer.getvalue())
    with CurveWriter(tmp_path / "direct.h5", seed=5, code_version="t", classes=["a"], config={}) as w:
        w.append(records[:3])
        w.append(records[3:])
    with CurveWriter(tmp_path / "merged.h5", seed=5, code_version="t", classes=["a"], config={}) as w:
        assert w.append_files(parts[:1]) == 3 and w.append_files(parts[1:]) == 4
    with CurveReader(tmp_path / "direct.h5") as d, CurveReader(tmp_path / "merged.h5") as m:
        assert d.columns("params") == m.columns("params") and d.columns("criteria") == m.columns("criteria")
        for g in ("params", "instrument", "criteria"):
            for name in d.columns(g):
                np.testing.assert_array_equal(d.column(g, name), m.column(g, name))
        for a, b in zip(d.read(0, 7), m.read(0, 7)):
            assert a.label == b.label and a.q_unit == b.q_unit and a.params == b.params and a.criteria == b.criteria
            for name in ("q", "intensity", "d_intensity", "dq"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert list(m.column("params", "note")) == [""] * 5 + ["large", "2.0"]
