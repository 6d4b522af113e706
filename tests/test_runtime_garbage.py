"""Never a confident answer to garbage: curves that are not scattering curves, through the SHIPPED model.

Garbage kinds (q log-spaced in 1/Å over typical SAXS/SANS windows, 60 to 400 points):

- pure noise: white noise on a level, log-normal noise, Poisson counts of a flat rate;
- constant curves, exactly flat or with a little noise;
- non-scattering shapes: a sine in q, a rising step, a Gaussian bump on a rising line,
  a random walk, an intensity rising as a power of q.

Criterion (stated here, checked below): a result is NOT a confident answer when
it is refused (status "error"), flagged novel (``is_novel``), or its
confidence (largest posterior-mean class probability) is below
:data:`LOW_CONFIDENCE` (the runtime's ``LOW_CONFIDENCE_THRESHOLD``, 0.5). At least :data:`REQUIRED_RATE` = 95 % of all
garbage curves must get no confident answer. The per-kind rates are printed
(run with -s).

The model is the shipped one (``model_catalog.shipped_model_files()``); the
environment variable SASVIEW_BNN_TEST_MODEL overrides it with another ONNX
file of the same contract. Without either the test is skipped.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from sasview_bnn_plugin.model.classifier import BNNClassifier
from sasview_bnn_plugin.model.catalog import shipped_model_files
from sasview_bnn_plugin.core.model_format import LOW_CONFIDENCE_THRESHOLD

LOW_CONFIDENCE = LOW_CONFIDENCE_THRESHOLD
REQUIRED_RATE = 0.95
PER_KIND = 20


def garbage_model_path() -> Path | None:
    override = os.environ.get("SASVIEW_BNN_TEST_MODEL")
    if override:
        return Path(override)
    shipped = shipped_model_files()
    return shipped[0] if shipped else None


def q_window(rng: np.random.Generator) -> np.ndarray:
    """A log-spaced q grid in 1/Å, shape (points,), over a typical instrument window."""
    lo = 10 ** rng.uniform(-3.3, -2.0)
    hi = 10 ** rng.uniform(-0.9, -0.2)
    return np.geomspace(lo, hi, int(rng.integers(60, 400)))


def garbage(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(q, I, dI or None) of one garbage curve; arrays of shape (points,)."""
    q = q_window(rng)
    n = q.size
    t = np.log(q / q[0]) / np.log(q[-1] / q[0])  # 0..1 along the curve, in log q
    level = 10 ** rng.uniform(-2, 3)
    if kind == "white noise":
        i = level * (1 + 0.3 * rng.standard_normal(n))
    elif kind == "log-normal noise":
        i = level * np.exp(rng.normal(0, 1.5, n))
    elif kind == "poisson counts":
        i = rng.poisson(rng.uniform(5, 500), n).astype(float)
        return q, i, np.sqrt(np.maximum(i, 1))
    elif kind == "constant":
        i = np.full(n, level)
    elif kind == "constant with noise":
        i = level * (1 + 0.01 * rng.standard_normal(n))
    elif kind == "sine":
        cycles = rng.uniform(2, 12)
        i = level * (1.2 + np.sin(2 * np.pi * cycles * q / q[-1] + rng.uniform(0, 2 * np.pi)))
    elif kind == "rising step":
        i = level * np.where(t < rng.uniform(0.3, 0.7), 1.0, 10 ** rng.uniform(0.5, 2))
    elif kind == "gaussian bump on a rising line":
        centre, width = rng.uniform(0.3, 0.7), rng.uniform(0.03, 0.1)
        i = level * (1 + 2 * t + 3 * np.exp(-0.5 * ((t - centre) / width) ** 2))
    elif kind == "random walk":
        steps = rng.standard_normal(n)
        walk = np.cumsum(steps)
        i = level * (1 + (walk - walk.min()) / max(np.ptp(walk), 1e-9) * 10)
    elif kind == "rising power of q":
        i = level * (q / q[0]) ** rng.uniform(1, 4)
    else:
        raise ValueError(kind)
    d_i = np.abs(i) * 0.02 if rng.random() < 0.5 else None
    if d_i is not None and kind not in ("constant",):
        i = i + rng.normal(0, 1, n) * d_i
    return q, i, d_i


KINDS = [
    "white noise",
    "log-normal noise",
    "poisson counts",
    "constant",
    "constant with noise",
    "sine",
    "rising step",
    "gaussian bump on a rising line",
    "random walk",
    "rising power of q",
]


@pytest.fixture(scope="module")
def shipped_classifier() -> BNNClassifier:
    path = garbage_model_path()
    if path is None:
        pytest.skip("no shipped model in sasview_bnn_plugin/onnx_models yet (set SASVIEW_BNN_TEST_MODEL to use another)")
    return BNNClassifier(path, provider="cpu")


def is_confident(result) -> bool:
    return result.ok and not result.is_novel and result.confidence >= LOW_CONFIDENCE


@pytest.mark.slow
def test_garbage_curves_never_get_a_confident_answer(shipped_classifier):
    rng = np.random.default_rng(2026)
    curves, kinds = [], []
    for kind in KINDS:
        for k in range(PER_KIND):
            q, i, d_i = garbage(kind, rng)
            curves.append((q, i, d_i, None, "1/A"))
            kinds.append(kind)
    results = shipped_classifier.classify(curves)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    confident_labels: dict[str, list[str]] = defaultdict(list)
    for kind, result in zip(kinds, results):
        c = counts[kind]
        c["curves"] += 1
        if not result.ok:
            c["refused"] += 1
        elif result.is_novel:
            c["novel"] += 1
        elif result.confidence < LOW_CONFIDENCE:
            c["low confidence"] += 1
        else:
            confident_labels[kind].append(f"{result.label} {result.confidence:.2f}")
    print(f"\nmodel {shipped_classifier.model_path}; criterion: refused, novel or confidence < {LOW_CONFIDENCE}")
    for kind in KINDS:
        c = counts[kind]
        flagged = c["refused"] + c["novel"] + c["low confidence"]
        print(
            f"{kind:32s} flagged {flagged:3d}/{c['curves']} ({flagged / c['curves']:.0%}): refused {c['refused']}, "
            f"novel {c['novel']}, low confidence {c['low confidence']}; confident: {confident_labels[kind][:4]}"
        )
    flagged_all = sum(not is_confident(r) for r in results)
    rate = flagged_all / len(results)
    print(f"all kinds: {flagged_all}/{len(results)} = {rate:.1%} without a confident answer (required {REQUIRED_RATE:.0%})")
    assert rate >= REQUIRED_RATE, {k: confident_labels[k] for k in KINDS if confident_labels[k]}
