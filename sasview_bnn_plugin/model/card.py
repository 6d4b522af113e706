"""Model cards: the JSON (for programs) and Markdown (for people) files beside an ONNX model.

A model ``NAME.onnx`` ships with ``NAME.json`` and ``NAME.md``. The JSON card
records, among everything a user needs to judge the model (data, method,
metrics, known weaknesses), the sha256 and size of the exact ONNX file it
describes. The runtime refuses a model file whose sha256 differs from its
card's: the file was changed, damaged or swapped after the card was written,
so the card's numbers do not describe it.

A model file without a card (a user's own export) is accepted; shipped models
must have one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..core.model_format import ModelFormatError

#: Keys every JSON card has (the trainer's ``card`` command writes more).
REQUIRED_CARD_KEYS: tuple[str, ...] = ("name", "file", "sha256", "size_bytes")


def card_path(model_path: str | os.PathLike[str]) -> Path:
    """The JSON card of ``model_path``: the same name with ``.json`` instead of ``.onnx``."""
    return Path(model_path).with_suffix(".json")


def markdown_card_path(model_path: str | os.PathLike[str]) -> Path:
    """The Markdown card of ``model_path``: the same name with ``.md``."""
    return Path(model_path).with_suffix(".md")


def file_sha256(path: str | os.PathLike[str], block_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(model_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON card of a model, or None when it has none.

    Raises :class:`ModelFormatError` when the card exists but is not a JSON
    object with the :data:`REQUIRED_CARD_KEYS`.
    """
    path = card_path(model_path)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFormatError(f"the model card {path.name} cannot be read ({err.__class__.__name__}); reinstall or re-export the model") from None
    if not isinstance(card, dict) or any(key not in card for key in REQUIRED_CARD_KEYS):
        raise ModelFormatError(f"the model card {path.name} lacks {', '.join(REQUIRED_CARD_KEYS)}; it was not written by sasview-bnn-train card")
    return card


def verify_model_file(model_path: str | os.PathLike[str], *, require_card: bool = False) -> dict[str, Any] | None:
    """Check a model file against its card; return the card (None if there is none and none is required).

    Raises :class:`ModelFormatError` when the file's sha256 differs from the
    card's, or when ``require_card`` is set and there is no card.
    """
    model_path = Path(model_path)
    card = read_card(model_path)
    if card is None:
        if require_card:
            raise ModelFormatError(f"the model {model_path.name} has no card ({card_path(model_path).name}); a shipped model must have one")
        return None
    actual = file_sha256(model_path)
    expected = str(card["sha256"]).lower()
    if actual != expected:
        raise ModelFormatError(
            f"the model file {model_path.name} does not match its card {card_path(model_path).name}: its sha256 is "
            f"{actual[:16]}..., the card says {expected[:16]}...; the file was changed or damaged after the card was "
            "written, so the card's numbers do not describe it (reinstall sasview-bnn or re-export the model)"
        )
    return card
