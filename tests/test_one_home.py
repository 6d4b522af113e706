"""One home for each job (issue 13): the model file hashed and opened once per run, one output-format
check, one way to say "this curve failed", one entropy, one ONNX-metadata reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from sasview_bnn_plugin import ClassificationResult, Curve
from sasview_bnn_plugin.cli import main
from sasview_bnn_plugin.core.curve import Failure
from sasview_bnn_plugin.core.result import entropy
from sasview_bnn_plugin.io.result_stream import ResultsFileError, ResultStream, check_destination
from sasview_bnn_plugin.model import card as card_module
from sasview_bnn_plugin.model.catalog import LazyCard, resolve_model, shipped_models

DATA = Path(__import__("sasdata").__file__).parent / "example_data" / "1d_data" / "apoferritin.txt"


def test_a_classify_run_hashes_and_opens_only_the_model_it_runs_once(tmp_path, monkeypatch):
    if not shipped_models():
        pytest.skip("no shipped model")
    hashed, opened = [], []
    real_hash, real_session = card_module.file_sha256, ort.InferenceSession
    monkeypatch.setattr(card_module, "file_sha256", lambda path, *a, **k: hashed.append(Path(path).name) or real_hash(path, *a, **k))
    monkeypatch.setattr(ort, "InferenceSession", lambda model, *a, **k: opened.append(Path(str(model)).name) or real_session(model, *a, **k))
    assert main(["classify", str(DATA), "--threads", "1", "-o", str(tmp_path / "r.csv")]) == 0
    default = resolve_model(None, shipped_models()).path.name
    shipped = {s.path.name for s in shipped_models()}  # (an installed plugin may read its own model's metadata)
    assert [n for n in hashed if n in shipped] == [default] and [n for n in opened if n in shipped] == [default]


def test_listing_models_reads_no_card_until_one_is_looked_at(monkeypatch):
    sources = shipped_models()
    if not sources:
        pytest.skip("no shipped model")
    assert all(isinstance(s.card, LazyCard) for s in sources)
    hashed = []
    monkeypatch.setattr(card_module, "file_sha256", lambda path, *a, **k: hashed.append(path) or "0" * 64)
    assert hashed == []
    card = dict(sources[0].card)  # now it is read: the hash (the fake one here) does not match the JSON card
    assert len(hashed) == 1 and "error" in card and "does not match" in card["error"]


@pytest.mark.parametrize(
    "destination, mode, words",
    [
        ("out.txt", "new", "must end in .csv, .jsonl or .json"),
        ("-", "resume", "standard output cannot be resumed"),
        ("out.json", "resume", "a .json file is one document that cannot be continued"),
        ("out.json", "append", "watch appends rows"),
    ],
)
def test_one_check_of_the_output_destination_for_the_cli_and_the_stream(destination, mode, words):
    with pytest.raises((ValueError, ResultsFileError), match=words):
        check_destination(destination, mode)
    with pytest.raises((ValueError, ResultsFileError), match=words):
        ResultStream(destination, mode=mode)
    assert check_destination("out.jsonl", "append") == "jsonl" and check_destination("-") == "csv"


def test_a_failed_curve_a_refusal_and_a_failed_result_say_it_the_same_way():
    curve = Curve.failed("f.txt", "", Failure("the file is empty"))
    assert curve.failure == Failure("the file is empty") and curve.error == "the file is empty"
    assert Curve(np.ones(3), np.ones(3)).failure is None
    result = ClassificationResult.error("f.txt", "", curve.failure)
    assert result.failure == curve.failure and result.status == "error" and result.message == "the file is empty"


def test_the_trainer_uses_the_runtimes_entropy_and_metadata_reader():
    pytest.importorskip("torch")
    from sasview_bnn_trainer import card, export
    from sasview_bnn_trainer.evaluation import evaluate, metrics

    from sasview_bnn_plugin.model import catalog

    assert metrics.entropy is entropy
    assert export.read_metadata is catalog.read_metadata is card.read_metadata is evaluate.read_metadata
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(entropy(p), [np.log(2.0), 0.0])
