"""The seed 1D CNN, in a layout that packs several weight samples into one module.

One member (one set of weights) maps features (batch, 4, 256) to 7 class
probabilities and, since taxonomy version 2, 6 anomaly-presence probabilities:

    3 x [Conv1d(kernel k, 'same' padding) -> MaxPool1d(2) -> ReLU]
    -> flatten (or global average) -> Linear(hidden) -> ReLU -> Linear(7 + 6)
    -> softmax over the first 7 (primary class), sigmoid of the last 6 (anomalies present)

The output layer is one Linear of 7 + ``n_anomalies`` outputs, so the two
heads share every weight up to the last layer (``n_anomalies`` = 0 gives the
version-1 network).

:class:`PackedCNN` holds ``members`` such networks side by side as grouped
convolutions (groups = members; the input is repeated once per member, and the
fully connected layers are grouped 1x1 convolutions), so an ensemble or a set
of posterior draws runs as one graph -- the layout measured fastest with
onnxruntime (``benchmarks/exported_model_throughput.py``). Member ``m`` owns output channels
``m*c : (m+1)*c`` of every layer, so members never mix.

Weights are exchanged as *member state dicts* (``dict[name, Tensor]`` of one
member, see :meth:`PackedCNN.member_state`), from which any number of members
can be packed again with :func:`pack_members`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sasview_bnn_plugin.core.taxonomy import N_CLASSES


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of one member.

    ``channels``: output channels of the three conv layers; ``kernel``: conv
    kernel width (odd); ``hidden``: width of the fully connected layer, whose
    activations are the penultimate features used by the novelty score;
    ``pooling``: "flatten" keeps where along q a feature sits, "average" is a
    global average pool; ``n_anomalies``: presence outputs (one per anomaly
    class, 0 for a classifier of the primary class only); ``n_visibility``:
    auxiliary training outputs after those, one per anomaly, regressing its
    visibility score (points moved, docs/taxonomy.md) -- what decides the
    primary class of a mixture; dropped at export (:func:`inference_members`), 0 = none.

    Distance-preserving features (DDU, Mukhoti et al. 2021; off by default):
    ``spectral_coeff`` > 0 caps the spectral norm of every conv and of the
    fully connected weight (each reshaped to (out, in * kernel)) at that value
    -- a weight whose largest singular value exceeds it is scaled down to it
    (smoothness: near inputs stay near); ``residual`` adds an identity skip
    connection inside each conv + pool stage, the stage's input channels added
    to the first of its output channels before the ReLU and pooling
    (sensitivity: distinct inputs stay apart, so an unseen class cannot
    collapse onto a known one). Both act on the raw weights a posterior
    holds, through :func:`effective_state`; member state dicts, the packed
    network and the exported graph hold the *effective* weights (the skip
    is the identity added to the centre tap of each conv kernel, exact for
    'same' padding), so inference needs no extra node.
    """

    in_channels: int = 4
    n_bins: int = 256
    channels: tuple[int, int, int] = (8, 16, 32)
    kernel: int = 7
    hidden: int = 64
    n_classes: int = N_CLASSES
    pooling: str = "flatten"
    n_anomalies: int = N_CLASSES - 1
    n_visibility: int = 0
    spectral_coeff: float = 0.0
    residual: bool = False

    def __post_init__(self) -> None:
        if not self.spectral_coeff >= 0.0:
            raise ValueError(f"the spectral-norm cap must be positive (or 0 for none), got {self.spectral_coeff}")
        if self.kernel % 2 != 1:
            raise ValueError(f"the convolution kernel width must be odd, got {self.kernel}")
        if self.pooling not in ("flatten", "average"):
            raise ValueError(f"pooling must be 'flatten' or 'average', got {self.pooling!r}")
        if self.n_visibility not in (0, self.n_anomalies):
            raise ValueError(f"the visibility outputs are one per anomaly ({self.n_anomalies}) or none, got {self.n_visibility}")
        if self.n_bins % 8:
            raise ValueError(f"the number of q bins must be divisible by 8 (three 2x poolings), got {self.n_bins}")

    @property
    def fc_inputs(self) -> int:
        """Inputs of the first fully connected layer per member."""
        return self.channels[2] * (self.n_bins // 8 if self.pooling == "flatten" else 1)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "NetworkConfig":
        raw = json.loads(text)
        raw["channels"] = tuple(raw["channels"])
        raw.setdefault("n_anomalies", 0)  # networks of version 1 had no presence outputs
        raw.setdefault("n_visibility", 0)  # nor auxiliary visibility outputs
        raw["residual"] = bool(raw.get("residual", False))
        raw["spectral_coeff"] = float(raw.get("spectral_coeff", 0.0))
        return cls(**raw)


#: Parameter names of one member, in the order used for hashing and packing.
PARAMETER_NAMES: tuple[str, ...] = (
    "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias",
    "fc.weight", "fc.bias", "out.weight", "out.bias",
)


class PackedCNN(nn.Module):
    """``members`` independent copies of the seed CNN evaluated as one grouped graph.

    ``forward(x)`` takes features (batch, in_channels, n_bins) float32 and returns
    logits (batch, members, n_classes). ``hidden_features(x)`` returns the
    penultimate activations (batch, members, hidden).
    """

    def __init__(self, config: NetworkConfig, members: int = 1) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"a packed network needs at least one member, got {members}")
        self.config = config
        self.members = members
        c1, c2, c3 = config.channels
        k, m, pad = config.kernel, members, config.kernel // 2
        self.conv1 = nn.Conv1d(m * config.in_channels, m * c1, k, padding=pad, groups=m)
        self.conv2 = nn.Conv1d(m * c1, m * c2, k, padding=pad, groups=m)
        self.conv3 = nn.Conv1d(m * c2, m * c3, k, padding=pad, groups=m)
        self.fc = nn.Conv1d(m * config.fc_inputs, m * config.hidden, 1, groups=m)
        self.out = nn.Conv1d(m * config.hidden, m * self.n_outputs, 1, groups=m)
        self._init_like_single_networks()

    def _init_like_single_networks(self) -> None:
        """PyTorch's default init, with fan-in of one member (as nn.Linear / nn.Conv1d of one net)."""
        for layer in (self.conv1, self.conv2, self.conv3, self.fc, self.out):
            layer.reset_parameters()  # grouped layers already use the per-group fan-in

    @property
    def n_outputs(self) -> int:
        """Outputs of the last layer per member: class logits, presence logits, then auxiliary visibility outputs."""
        return self.config.n_classes + self.config.n_anomalies + self.config.n_visibility

    def _outputs(self, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.out(hidden).reshape(-1, self.members, self.n_outputs)
        c, a = self.config.n_classes, self.config.n_classes + self.config.n_anomalies
        return out[..., :c], out[..., c:a], out[..., a:]

    def heads(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """(class logits (batch, members, n_classes), presence logits (batch, members, n_anomalies)) from packed hidden activations."""
        logits, presence, _ = self._outputs(hidden)
        return logits, presence

    def hidden_features(self, x: Tensor) -> Tensor:
        """Penultimate activations, shape (batch, members, hidden)."""
        h = self._hidden(x)
        return h.reshape(-1, self.members, self.config.hidden)

    def _hidden(self, x: Tensor) -> Tensor:
        m = self.members
        h = x.repeat(1, m, 1) if m > 1 else x
        h = F.relu(F.max_pool1d(self.conv1(h), 2))
        h = F.relu(F.max_pool1d(self.conv2(h), 2))
        h = F.relu(F.max_pool1d(self.conv3(h), 2))
        if self.config.pooling == "average":
            h = h.mean(dim=2, keepdim=True)
        else:
            h = h.reshape(-1, m * self.config.fc_inputs, 1)
        return F.relu(self.fc(h))  # (batch, members*hidden, 1)

    def forward(self, x: Tensor, with_presence: bool = False) -> Tensor | tuple[Tensor, ...]:
        """Class logits, shape (batch, members, n_classes); with ``with_presence`` also the presence logits
        (batch, members, n_anomalies), and for a network with visibility outputs those (batch, members, n_visibility)
        as a third element (see :data:`VISIBILITY_SCALE`)."""
        logits, presence, visibility = self._outputs(self._hidden(x))
        if not with_presence:
            return logits
        return (logits, presence, visibility) if self.config.n_visibility else (logits, presence)

    def member_state(self, member: int) -> dict[str, Tensor]:
        """Weights of one member as a member state dict (detached copies)."""
        if not 0 <= member < self.members:
            raise IndexError(f"member {member} does not exist; the network has {self.members}")
        state = {}
        for name, p in self.named_parameters():
            rows = p.shape[0] // self.members
            state[name] = p.detach()[member * rows : (member + 1) * rows].clone()
        return state

    def member_states(self) -> list[dict[str, Tensor]]:
        return [self.member_state(k) for k in range(self.members)]


#: The weights :func:`effective_state` reparameterises: the three convs (spectral cap and skip) and the FC (cap).
CONV_WEIGHTS: tuple[str, ...] = ("conv1.weight", "conv2.weight", "conv3.weight")


def reparameterised(config: NetworkConfig) -> bool:
    """Whether the network's raw weights differ from its effective ones (a spectral cap or skip connections)."""
    return config.spectral_coeff > 0.0 or config.residual


def _capped(weight: Tensor, coeff: float) -> Tensor:
    """``weight`` scaled down so that the largest singular value of its (out, in * kernel) matrix is at most ``coeff``."""
    sigma = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)
    return weight * torch.clamp(coeff / sigma.clamp(min=1e-12), max=1.0)


def _skip(weight: Tensor) -> Tensor:
    """A conv weight (out, in, k) with the identity embedding of its inputs into its first outputs added at the centre tap."""
    c_out, c_in, k = weight.shape
    n = min(c_out, c_in)
    eye = torch.zeros_like(weight)
    idx = torch.arange(n, device=weight.device)
    eye[idx, idx, k // 2] = 1.0
    return weight + eye


def effective_state(config: NetworkConfig, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The weights one member computes with, from the raw weights a posterior holds (differentiable).

    Without a spectral cap or skip connections (the default) this is the state
    itself. Otherwise every conv weight is capped and then has the identity
    skip added (conv(h) + h is the conv with W + I at the centre tap, 'same'
    padding), and the FC weight is capped; the output layer is left free, as
    in DDU. Shapes as in :meth:`PackedCNN.member_state`.
    """
    if not reparameterised(config):
        return dict(state)
    out = dict(state)
    for name in (*CONV_WEIGHTS, "fc.weight"):
        w = state[name]
        if config.spectral_coeff > 0.0:
            w = _capped(w, config.spectral_coeff)
        if config.residual and name in CONV_WEIGHTS:
            w = _skip(w)
        out[name] = w
    return out


def packed_parameters(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Concatenate member state dicts into the parameters of a packed network (differentiable)."""
    return {name: torch.cat([s[name] for s in states], dim=0) for name in PARAMETER_NAMES}


def pack_members(config: NetworkConfig, states: Sequence[Mapping[str, Tensor]]) -> PackedCNN:
    """A :class:`PackedCNN` holding the given members' weights, in order."""
    net = PackedCNN(config, members=len(states))
    with torch.no_grad():
        for name, value in packed_parameters(states).items():
            net.get_parameter(name).copy_(value)
    return net


#: The visibility outputs predict log1p(points moved) / VISIBILITY_SCALE, about 0..1 for 0..5000 points.
VISIBILITY_SCALE = math.log1p(5000.0)


def inference_members(config: NetworkConfig, states: Sequence[Mapping[str, Tensor]]) -> tuple[NetworkConfig, list[dict[str, Tensor]]]:
    """The network and member weights without the auxiliary visibility outputs (what export packs into ONNX);
    a network without them comes back unchanged."""
    if not config.n_visibility:
        return config, [dict(s) for s in states]
    n = config.n_classes + config.n_anomalies
    trimmed = [{**s, "out.weight": s["out.weight"][:n], "out.bias": s["out.bias"][:n]} for s in states]
    return dataclasses.replace(config, n_visibility=0), trimmed


def count_parameters(config: NetworkConfig) -> int:
    """Number of weights of one member."""
    return sum(p.numel() for p in PackedCNN(config, 1).parameters())
