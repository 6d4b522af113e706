"""Choice of the onnxruntime execution provider, with a safe fall-back to CPU.

``provider="auto"`` uses CUDA when onnxruntime offers ``CUDAExecutionProvider``
(the ``onnxruntime-gpu`` package with working CUDA libraries), else CPU.
``"cpu"`` forces CPU. ``"cuda"`` asks for CUDA and falls back to CPU with a
warning when it is not there. A broken CUDA install -- session creation raising,
or onnxruntime silently dropping CUDA from ``session.get_providers()`` -- falls
back to CPU and never stops classification. Every decision is logged with its
reason.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PROVIDER_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")

#: Builds an onnxruntime session: (model path or bytes, SessionOptions, providers) -> session.
SessionFactory = Callable[[Any, "ort.SessionOptions", list[str]], Any]

# onnxruntime is imported where a session is chosen or opened, not with this module: a process that only
# prepares curves (classify --jobs workers import the classifier's preparation) never loads it.


def _ort_session(model: Any, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    import onnxruntime as ort

    with warnings.catch_warnings():
        # onnxruntime warns (and drops the provider) when one is not compiled in; we report that ourselves.
        warnings.simplefilter("ignore", UserWarning)
        return ort.InferenceSession(model, sess_options=options, providers=providers)


@dataclass(frozen=True)
class ProviderDecision:
    """The providers a session uses, in priority order, and why."""

    providers: tuple[str, ...]
    reason: str

    @property
    def device(self) -> str:
        """"cuda" when CUDA runs the model, else "cpu"."""
        return "cuda" if self.providers and self.providers[0] == CUDA else "cpu"


def choose_providers(requested: str = "auto", available: Sequence[str] | None = None) -> ProviderDecision:
    """Providers to ask onnxruntime for, before any session exists.

    ``available`` defaults to ``onnxruntime.get_available_providers()``.
    """
    requested = requested.lower()
    if requested not in PROVIDER_CHOICES:
        raise ValueError(f"provider must be one of {', '.join(PROVIDER_CHOICES)}, not {requested!r}")
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    offered = list(available)
    if requested == "cpu":
        return ProviderDecision((CPU,), "CPU was requested")
    if CUDA in offered:
        return ProviderDecision((CUDA, CPU), "onnxruntime offers CUDAExecutionProvider")
    why = (
        "onnxruntime offers no CUDAExecutionProvider (install onnxruntime-gpu with matching CUDA libraries "
        "for GPU inference); using CPU"
    )
    if requested == "cuda":
        log.warning("CUDA was requested but %s", why)
    else:
        log.info("%s", why)
    return ProviderDecision((CPU,), why)


def session_options(intra_op_threads: int | None = None, spinning: bool = True) -> ort.SessionOptions:
    """Session options; ``intra_op_threads`` None or 0 lets onnxruntime choose.

    ``spinning`` False makes onnxruntime's idle intra-op threads sleep instead of
    busy-waiting for the next parallel section (``session.intra_op.allow_spinning``):
    what a session wants when other processes of the same job (``classify --jobs``)
    need the cores between its calls.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_threads:
        if intra_op_threads < 0:
            raise ValueError("intra_op_threads must be positive")
        options.intra_op_num_threads = int(intra_op_threads)
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: provider fall-backs are reported by us
    return options


def open_session(
    model: str | os.PathLike[str] | bytes,
    requested: str = "auto",
    intra_op_threads: int | None = None,
    available: Sequence[str] | None = None,
    session_factory: SessionFactory | None = None,
    spinning: bool = True,
) -> tuple[Any, ProviderDecision]:
    """Open an inference session on the best working provider.

    Returns the session and the decision actually in force (read back from
    ``session.get_providers()``). Errors of the CPU session itself propagate:
    they mean the model cannot be run at all.
    """
    factory = session_factory or _ort_session
    decision = choose_providers(requested, available)
    options = session_options(intra_op_threads, spinning)
    model_arg = os.fspath(model) if not isinstance(model, bytes) else model
    if CUDA in decision.providers:
        try:
            session = factory(model_arg, options, list(decision.providers))
        except Exception as err:  # a broken CUDA install raises all sorts of errors
            reason = f"CUDA session creation failed ({type(err).__name__}: {str(err).strip()[:200]}); falling back to CPU"
            log.warning("%s", reason)
            session = factory(model_arg, session_options(intra_op_threads, spinning), [CPU])
            return session, ProviderDecision((CPU,), reason)
        in_use = tuple(session.get_providers())
        if CUDA not in in_use:
            reason = "onnxruntime dropped CUDAExecutionProvider when opening the model (CUDA libraries missing?); using CPU"
            log.warning("%s", reason)
            return session, ProviderDecision(in_use or (CPU,), reason)
        return session, ProviderDecision(in_use, decision.reason)
    session = factory(model_arg, options, [CPU])
    return session, ProviderDecision(tuple(session.get_providers()) or (CPU,), decision.reason)
