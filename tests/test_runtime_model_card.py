"""Model cards: the runtime refuses a model file whose sha256 differs from its card's."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("onnx")

from onnx_test_models import write_model

from sasview_bnn_plugin.model.card import card_path, file_sha256, read_card, verify_model_file
from sasview_bnn_plugin.model.catalog import shipped_models
from sasview_bnn_plugin.core.model_format import ModelFormatError


def _write_card(model) -> dict:
    card = {"name": model.stem, "file": model.name, "sha256": file_sha256(model), "size_bytes": model.stat().st_size,
            "summary": {"description": "a test model"}}
    card_path(model).write_text(json.dumps(card))
    return card


def test_a_model_that_matches_its_card_is_accepted(tmp_path):
    model = write_model(tmp_path / "m.onnx")
    card = _write_card(model)
    assert verify_model_file(model) == card
    assert read_card(model)["sha256"] == card["sha256"]


def test_a_model_changed_after_its_card_was_written_is_refused(tmp_path):
    model = write_model(tmp_path / "m.onnx")
    _write_card(model)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    model.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="does not match its card"):
        verify_model_file(model)


def test_a_model_swapped_for_another_is_refused(tmp_path):
    model = write_model(tmp_path / "m.onnx", seed=1)
    _write_card(model)
    write_model(tmp_path / "m.onnx", seed=2)
    with pytest.raises(ModelFormatError, match="changed or damaged after the card"):
        verify_model_file(model)


def test_cards_are_optional_for_user_models_and_required_for_shipped_ones(tmp_path):
    model = write_model(tmp_path / "m.onnx")
    assert verify_model_file(model) is None
    with pytest.raises(ModelFormatError, match="has no card"):
        verify_model_file(model, require_card=True)


def test_a_damaged_card_is_refused_in_plain_words(tmp_path):
    model = write_model(tmp_path / "m.onnx")
    card_path(model).write_text("{not json")
    with pytest.raises(ModelFormatError, match="cannot be read"):
        verify_model_file(model)
    card_path(model).write_text(json.dumps({"name": "m"}))
    with pytest.raises(ModelFormatError, match="lacks"):
        verify_model_file(model)


def test_the_catalog_lists_a_tampered_shipped_model_with_an_error_card(tmp_path, monkeypatch):
    package = tmp_path / "fake_models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    good = write_model(package / "good.onnx", seed=1)
    _write_card(good)
    bad = write_model(package / "bad.onnx", seed=2)
    _write_card(bad)
    shutil.copyfile(good, bad)  # bad.onnx now holds other bytes than its card describes
    write_model(package / "cardless.onnx", seed=3)
    monkeypatch.syspath_prepend(str(tmp_path))
    cards = {s.name: s.card for s in shipped_models("fake_models")}
    assert "error" not in cards["good"] and cards["good"]["description"] == "a test model"
    assert "does not match its card" in cards["bad"]["error"]
    assert "has no card" in cards["cardless"]["error"]


def test_the_classifier_refuses_a_model_changed_after_its_card(tmp_path):
    from sasview_bnn_plugin.model.classifier import BNNClassifier

    model = write_model(tmp_path / "m.onnx", seed=1)
    card = _write_card(model)
    assert BNNClassifier(model).card == card
    write_model(tmp_path / "m.onnx", seed=2)
    with pytest.raises(ModelFormatError, match="does not match its card"):
        BNNClassifier(model)
