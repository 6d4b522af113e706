"""A few simulated curves of every class, pinned: the simulator's output does not move without a version bump.

Each case is (class, seed of ``numpy.random.default_rng``, mixture probability);
its pins are two digests: of the random stream's state after the curve (the
same random numbers were drawn, in the same order: the parameter tables of
:mod:`sasview_bnn_trainer.simulation.specs` and the code that reads them) and of
the curve (q, I, dI, dq, unit, slit length, and every parameter, instrument
setting and criterion in its order). Numbers enter the second digest with 10
significant digits, so that the last bits of vectorised exp/log, which may
differ between CPUs, do not count; a changed draw moves far more than that.

Made with simulator 2.2.0 (the code of the 1,000,000-curve training set of
seed 8008). A change to the physics or the draws must fail here and bump
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
    (0, 7000, 0.35): ("1d2cdf0fec762123", "f5640f198d848a06"),
    (0, 7011, 0.35): ("1e244eadfd0a94cf", "9b589b0f06c63a5c"),
    (0, 7012, 0.35): ("e63b0860d0340dab", "1ecc22441cf3d378"),
    (0, 7013, 1.0): ("2819f53ffa0385cb", "9e8f61c4e89c7d98"),
    (1, 7111, 0.35): ("292a6440760a9564", "292a82644f376443"),
    (1, 7112, 0.35): ("1cbccc7647ca3ef2", "cf122d9777570f47"),
    (1, 7113, 1.0): ("29949975eedf7147", "1b654294e9bbbfd1"),
    (2, 7211, 0.35): ("4a47e068085a6784", "8a465991be81003c"),
    (2, 7212, 0.35): ("aa953e57c1b49de5", "3705e96933051cde"),
    (2, 7213, 1.0): ("bc21144f09721a33", "0c8126d27167c107"),
    (3, 7311, 0.35): ("9dd57e099149a310", "cdf1c48bafbf48ef"),
    (3, 7312, 0.35): ("26e93ea872fc8988", "186e901fdb933459"),
    (3, 7313, 1.0): ("69421091234e1ffa", "614ac2fc6aeb7c30"),
    (3, 7319, 0.35): ("459ea4426c28c280", "a48b765228fd12c0"),
    (4, 7411, 0.35): ("816b41cb58864cf9", "8f31f37493ed0fd4"),
    (4, 7412, 0.35): ("dd942a1848e3b75a", "29a9b08c62a2b436"),
    (4, 7413, 1.0): ("ed22b3f8cc4c2a50", "6cee296f44668761"),
    (5, 7511, 0.35): ("652f80f308f4d04b", "ce1cc7b10f79562b"),
    (5, 7512, 0.35): ("7af9d30d4cab5684", "53cb0f6b8832bdfe"),
    (5, 7513, 1.0): ("237fc078e4fd8d73", "a8adb2c930700b8b"),
    (6, 7611, 0.35): ("ca3a087a9774736b", "0cb75d4c788ac79d"),
    (6, 7612, 0.35): ("7dc01c3ef1822248", "1891371a7f43fb7b"),
    (6, 7613, 1.0): ("18a717f969a8b499", "c9c3512ef0469cdf"),
    (6, 7969, 0.35): ("dbe0fc83d903a8f4", "d3726519dd73b05a"),
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
    assert SIMULATOR_VERSION == "2.2.0", "the simulator changed version: re-pin PINNED for the new curves"


@pytest.mark.parametrize("case", sorted(PINNED), ids=lambda c: f"class{c[0]}-seed{c[1]}-mix{c[2]}")
def test_pinned_curves_are_unchanged(case):
    stream, curve = fingerprint(*case)
    assert stream == PINNED[case][0], "other random numbers were drawn (a range, a table's order or the code changed)"
    assert curve == PINNED[case][1], "the same random numbers made another curve (the physics changed)"


if __name__ == "__main__":
    for case in sorted(PINNED):
        print(f"    {case}: {fingerprint(*case)},")
