"""Where models come from: the shipped ``sasview_bnn_plugin.onnx_models`` files and plugins.

A model is named by a :class:`ModelSource` (name, path, card). The card is a
short summary of the model's metadata (and of a ``<name>.md`` or ``<name>.json``
file shipped beside it), for ``sasview-bnn models``.
"""

from __future__ import annotations

import importlib.resources
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from .card import verify_model_file
from ..core.model_format import ModelFormatError

SHIPPED_MODELS_PACKAGE = "sasview_bnn_plugin.onnx_models"

NO_MODEL_MESSAGE = "no model is shipped with this installation yet; pass --model FILE"

#: Metadata keys summarised on a model card, in display order.
CARD_KEYS: tuple[str, ...] = (
    "inference_method",
    "n_samples",
    "novelty_score",
    "novelty_settings",
    "novelty_threshold",
    "novelty_false_alarm_rate",
    "metrics",
    "training_data",
    "package_version",
)


@dataclass(frozen=True)
class ModelSource:
    """A named ONNX model file and its card (metadata summary, strings)."""

    name: str
    path: Path
    card: Mapping[str, str] = field(default_factory=dict)
    provider: str = ""  # who contributed it: "shipped" or a plugin's name


class ModelNotFoundError(LookupError):
    """The requested model name or file does not exist; the message lists what does."""


class LazyCard(Mapping[str, str]):
    """A model card built on first use: listing or choosing a model neither hashes nor opens its file.

    (``sasview-bnn classify`` verifies and opens only the model it runs, once; ``sasview-bnn models``
    reads every card it shows.)
    """

    def __init__(self, build: Callable[[], Mapping[str, str]]) -> None:
        self._build: Callable[[], Mapping[str, str]] | None = build
        self._card: dict[str, str] = {}

    def _read(self) -> dict[str, str]:
        if self._build is not None:
            self._card, self._build = dict(self._build()), None
        return self._card

    def __getitem__(self, key: str) -> str:
        return self._read()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def __repr__(self) -> str:
        return "LazyCard(not read yet)" if self._build is not None else f"LazyCard({self._card!r})"


def shipped_model_files(package: str = SHIPPED_MODELS_PACKAGE) -> list[Path]:
    """The ``*.onnx`` files installed in ``package`` (default ``sasview_bnn_plugin.onnx_models``), sorted."""
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        return []
    files = []
    for entry in root.iterdir():
        if entry.name.endswith(".onnx") and entry.is_file():
            # Installed wheels and editable installs are plain directories, so the entry is a real path.
            files.append(Path(os.fspath(entry)))  # type: ignore[arg-type]
    return sorted(files)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, read with onnxruntime (no onnx/torch needed).

    Raises :class:`ModelFormatError` when the file is not a readable ONNX model.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"the model file {path} does not exist")
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception:
        raise ModelFormatError(f"the model file {path} is damaged or not an ONNX model") from None
    return dict(session.get_modelmeta().custom_metadata_map)


def card_from_metadata(meta: Mapping[str, str], sidecar_dir: Path | None = None, name: str = "") -> dict[str, str]:
    """A model card: the :data:`CARD_KEYS` present in ``meta`` plus a shipped description."""
    card = {key: str(meta[key]) for key in CARD_KEYS if key in meta}
    if sidecar_dir is not None and name:
        md = sidecar_dir / f"{name}.md"
        if md.is_file():
            first = next((line.strip("# ").strip() for line in md.read_text(encoding="utf-8").splitlines() if line.strip()), "")
            if first:
                card["description"] = first
        js = sidecar_dir / f"{name}.json"
        if js.is_file():
            try:
                extra = json.loads(js.read_text(encoding="utf-8"))
                if isinstance(extra, dict):
                    # A full model card (sasview_bnn_plugin.model.card) is long: show its summary.
                    shown = extra.get("summary", extra) if isinstance(extra.get("summary"), dict) else extra
                    card.update({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in shown.items()})
            except json.JSONDecodeError:
                card["card_error"] = f"{js.name} is not valid JSON"
    return card


#: The shipped model used when none is named (simulator 2.4: strong upturns and the uncertainties files report,
#: honest, mis-scaled or missing; density and noise channels; taxonomy version 2; 8 posterior samples of each of
#: two independent trainings). The earlier models stay loadable by name for comparison:
#: ``--model sasview_bnn_vi16_sim24dn_1m`` (the default before: the first of those two trainings alone),
#: ``sasview_bnn_vi16_sim23dn_1m``,
#: ``sasview_bnn_vi16_sim22_1m``, ``sasview_bnn_vi16_sim2_1m`` and the version-1 ``sasview_bnn_vi16_1m``.
DEFAULT_MODEL = "sasview_bnn_vi16_sim24dn2_1m"


def shipped_models(package: str = SHIPPED_MODELS_PACKAGE) -> list[ModelSource]:
    """Every model installed with the package, with its card.

    A damaged file, or one whose sha256 differs from its JSON card's (see
    :mod:`~sasview_bnn_plugin.model.card`), gets an error card. The cards are
    :class:`LazyCard`: read (file hashed, metadata read) when first looked at.
    """
    sources = []
    files = shipped_model_files(package)
    # The default model first; the others stay loadable by name, for comparison.
    files = sorted(files, key=lambda p: p.stem != DEFAULT_MODEL)
    for path in files:
        sources.append(ModelSource(path.stem, path, LazyCard(lambda path=path: _shipped_card(path)), provider="shipped"))
    return sources


def _shipped_card(path: Path) -> dict[str, str]:
    """The card of a shipped model (its file verified against its JSON card), or an error card."""
    try:
        verify_model_file(path, require_card=True)
        return card_from_metadata(read_metadata(path), path.parent, path.stem)
    except (ModelFormatError, ModelNotFoundError) as err:
        return {"error": str(err)}


def resolve_model(name_or_path: str | os.PathLike[str] | None, available: Iterable[ModelSource]) -> ModelSource:
    """Pick a model: an existing file path, else a model name among ``available``.

    None picks the first shipped model, :data:`DEFAULT_MODEL` (plugin models are used only when named,
    so installing a plugin never changes the default). Raises
    :class:`ModelNotFoundError` with :data:`NO_MODEL_MESSAGE` when no model is shipped.
    """
    sources = list(available)
    if name_or_path is None:
        shipped = [s for s in sources if s.provider == "shipped"]
        if shipped:
            return shipped[0]
        others = ", ".join(s.name for s in sources)
        raise ModelNotFoundError(NO_MODEL_MESSAGE + (f" or --model NAME with a plugin model ({others})" if others else ""))
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.is_file():
        return ModelSource(path.stem, path, {}, provider="file")
    for source in sources:
        if source.name == text:
            return source
    if path.suffix.lower() == ".onnx" or os.sep in text:
        raise ModelNotFoundError(f"the model file {text} does not exist")
    names = ", ".join(s.name for s in sources) or "none (" + NO_MODEL_MESSAGE + ")"
    raise ModelNotFoundError(f"no model is named {text!r}; available models: {names}")
