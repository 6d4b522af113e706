"""A few simulated curves of every class, pinned: the simulator's output does not move without a version bump.

Each case is (class, seed of ``numpy.random.default_rng``, mixture probability);
its pins are two digests: of the random stream's state after the curve (the
same random numbers were drawn, in the same order: the parameter tables of
:mod:`sasview_bnn_trainer.simulation.specs` and the code that reads them) and of
the curve (q, I, dI, dq, unit, slit length, and every parameter, instrument
setting and criterion in its order). Numbers enter the second digest with 10
significant digits, so that the last bits of vectorised exp/log, which may
differ between CPUs, do not count; a changed draw moves far more than that.

Made with simulator 2.3.0 (2.2.0 plus the short-upturn near miss and nearly
unsmeared pinhole instruments). A change to the physics or the draws must fail here and bump
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
    (0, 7000, 0.35): ("23f5bcf372a2efd5", "036a75bc88b2224a"),
    (0, 7011, 0.35): ("3ade72ec35fcc8b5", "25bfe1693176e321"),
    (0, 7012, 0.35): ("e63b0860d0340dab", "e2b8b26eb1d6e66b"),
    (0, 7013, 1.0): ("14d26ee84b7eaac3", "41e13229a12cac88"),
    (1, 7111, 0.35): ("6170042a26e485d9", "cd056210d66bfc09"),
    (1, 7112, 0.35): ("bbf28a3efa450e67", "9b9b1cf585e84b2b"),
    (1, 7113, 1.0): ("1af4a33e1beb36e0", "6e22572ac11e5160"),
    (2, 7211, 0.35): ("0cdb686759fe38fe", "1298ad5bdc0751ca"),
    (2, 7212, 0.35): ("a46febb115054cda", "5e97cda74d75cf6a"),
    (2, 7213, 1.0): ("bc21144f09721a33", "d843539471d32af2"),
    (3, 7311, 0.35): ("35849635db6f6fcd", "4106d5b655d1073c"),
    (3, 7312, 0.35): ("30783a6a384c785b", "7ba2e4bc32928528"),
    (3, 7313, 1.0): ("2472f168c02053de", "bc84b5a0c3bec9b1"),
    (3, 7319, 0.35): ("9beaa64ba310380b", "673b162056f2aa8b"),
    (4, 7411, 0.35): ("6ea79063149a4d49", "47d8ce72fbee58dd"),
    (4, 7412, 0.35): ("63ca6ce296ee7e3f", "f0bd4f586ba0efdf"),
    (4, 7413, 1.0): ("cd521a5a9aa48f8f", "eadd06579a7f9086"),
    (5, 7511, 0.35): ("4665a2ea91755945", "b56cf7ecff415f9c"),
    (5, 7512, 0.35): ("ac4d7c4e5456a753", "11ca8f5a2ff8bb5b"),
    (5, 7513, 1.0): ("df1fd4a5f7ba4dd6", "1f00ae92015150a2"),
    (6, 7611, 0.35): ("0f1acb698b122eba", "5d36a10d9aca1c1d"),
    (6, 7612, 0.35): ("7dc01c3ef1822248", "1ea7e0404db9bb8a"),
    (6, 7613, 1.0): ("e585136f656b533d", "77f8202aab6d042a"),
    (6, 7969, 0.35): ("b00da47ac1a8747a", "ae1d6dc2dd490b15"),
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
    assert SIMULATOR_VERSION == "2.3.0", "the simulator changed version: re-pin PINNED for the new curves"


@pytest.mark.parametrize("case", sorted(PINNED), ids=lambda c: f"class{c[0]}-seed{c[1]}-mix{c[2]}")
def test_pinned_curves_are_unchanged(case):
    stream, curve = fingerprint(*case)
    assert stream == PINNED[case][0], "other random numbers were drawn (a range, a table's order or the code changed)"
    assert curve == PINNED[case][1], "the same random numbers made another curve (the physics changed)"


if __name__ == "__main__":
    for case in sorted(PINNED):
        print(f"    {case}: {fingerprint(*case)},")
