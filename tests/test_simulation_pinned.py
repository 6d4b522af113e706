"""A few simulated curves of every class, pinned: the simulator's output does not move without a version bump.

Each case is (class, seed of ``numpy.random.default_rng``, mixture probability);
its pins are two digests: of the random stream's state after the curve (the
same random numbers were drawn, in the same order: the parameter tables of
:mod:`sasview_bnn_trainer.simulation.specs` and the code that reads them) and of
the curve (q, I, dI, dq, unit, slit length, and every parameter, instrument
setting and criterion in its order). Numbers enter the second digest with 10
significant digits, so that the last bits of vectorised exp/log, which may
differ between CPUs, do not count; a changed draw moves far more than that.

Made with simulator 2.5.0 (2.4.0, which added strong upturns and uncertainties
reported off by a factor or missing, plus merged and irregular q layouts). A change to the physics or the draws must fail here and bump
``SIMULATOR_VERSION``; then re-pin (run this file as a script to print the
digests).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

pytest.importorskip("sasmodels")

from sasview_bnn_trainer.simulation.classes import SIMULATOR_VERSION, simulate_curve  # noqa: E402

#: (label, seed, mixture probability) -> (digest of the random stream's state after the curve, digest of the curve)
PINNED: dict[tuple[int, int, float], tuple[str, str]] = {
    (0, 7000, 0.35): ('5e5c98f048884250', 'fed8fc4f4d0c19bd'),
    (0, 7011, 0.35): ('5ad0e9a7f4dc0935', '683f6c934e38fd0b'),
    (0, 7012, 0.35): ('69d1a7b64006890b', 'f7a420ebae6494de'),
    (0, 7013, 1.0): ('dee52a4e21e361c3', '41458001adf5d273'),
    (1, 7111, 0.35): ('7a3dfa16f91f6d6e', '49b10cef1b535712'),
    (1, 7112, 0.35): ('e9ee4e91dc2e7b30', '53eac5d752b397ce'),
    (1, 7113, 1.0): ('123f1645529cd762', '730c46b6eab359ee'),
    (2, 7211, 0.35): ('0711da22acdfb6f1', 'e01f37dc1f7d5d85'),
    (2, 7212, 0.35): ('8ad78a1cf59e6d5d', '5d0bf18ae8b60d4c'),
    (2, 7213, 1.0): ('5efe6ff8b686ebe6', 'cf599a97317321e2'),
    (3, 7311, 0.35): ('17890b958906b89b', '1eb365b90b1c5b77'),
    (3, 7312, 0.35): ('03e64f938c348e74', 'bf2e9061a1bc4cd6'),
    (3, 7313, 1.0): ('f0b05687539300b4', '459065e51c24f18c'),
    (3, 7319, 0.35): ('6b071aaaad77f98d', '19acdd506b63e6b3'),
    (4, 7411, 0.35): ('61938ce3b21af7ed', '74133096596575d7'),
    (4, 7412, 0.35): ('3651b0c1bd044104', '6efe17390429c9ee'),
    (4, 7413, 1.0): ('b71d27c1e679f43f', '370f8d1b038cf032'),
    (5, 7511, 0.35): ('be456349417db74f', 'b0cfe5eb22be4347'),
    (5, 7512, 0.35): ('efb178a79a7a3bed', '2a24fdfbe9c861e3'),
    (5, 7513, 1.0): ('907e9cb402cf2dee', '6917a2f46db84bcc'),
    (6, 7611, 0.35): ('25c000c0bcfb1c7d', '5b1666277260d5f1'),
    (6, 7612, 0.35): ('4cb987766bb18591', '18c1a4aed42e7212'),
    (6, 7613, 1.0): ('25adafc67293e0f5', '5f2e01453e97fe65'),
    (6, 7969, 0.35): ('43830a6f09ed97f1', 'd88104329ca51487'),
}


def _text(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "%.10g" % value
    if isinstance(value, np.ndarray):
        return ",".join(np.char.mod("%.10g", value.astype(float)))
    return repr(value)


def fingerprint(label: int, seed: int, mixture_probability: float) -> tuple[str, str]:
    rng = np.random.default_rng(seed)
    curve = simulate_curve(label, rng, mixture_probability)
    state = json.dumps(rng.bit_generator.state, sort_keys=True)
    parts = [str(curve.label), curve.q_unit, _text(curve.slit_length)]
    parts += [_text(a) for a in (curve.q, curve.intensity, curve.d_intensity, curve.dq)]
    for table in (curve.params, curve.instrument, curve.criteria):
        parts.append(";".join(f"{k}={_text(v)}" for k, v in table.items()))
    return hashlib.sha256(state.encode()).hexdigest()[:16], hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def test_the_pins_are_of_this_simulator_version():
    assert SIMULATOR_VERSION == "2.5.0", "the simulator changed version: re-pin PINNED for the new curves"


@pytest.mark.parametrize("case", sorted(PINNED), ids=lambda c: f"class{c[0]}-seed{c[1]}-mix{c[2]}")
def test_pinned_curves_are_unchanged(case):
    stream, curve = fingerprint(*case)
    assert stream == PINNED[case][0], "other random numbers were drawn (a range, a table's order or the code changed)"
    assert curve == PINNED[case][1], "the same random numbers made another curve (the physics changed)"


if __name__ == "__main__":
    for case in sorted(PINNED):
        print(f"    {case}: {fingerprint(*case)},")
