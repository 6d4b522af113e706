"""The ONNX graph of an exported ensemble, built from its weights with ``onnx.helper``.

:func:`build_graph` writes the graph that :mod:`sasview_bnn_trainer.export`
ships, from :class:`EnsembleWeights` -- the packed network parameters of S
posterior samples (:data:`~sasview_bnn_trainer.network.PARAMETER_NAMES`, shapes
as in :class:`~sasview_bnn_trainer.network.PackedCNN`), the novelty head
(:class:`~sasview_bnn_trainer.novelty.MahalanobisNovelty`) and the two novelty
scales. The same weights can be read back from any exported file
(:meth:`EnsembleWeights.from_onnx`), so an old file can be rebuilt in the new
layout without the run that produced it.

Layout ``"sample-major"`` (the default; the fastest measured with onnxruntime on
CPU, ``benchmarks/exported_model_throughput.py``):

- activations are NCHW tensors (1, S*C, batch, L): the curves of a batch are
  the rows of one image, the samples' channels its channels; every conv is a
  2D conv with a (1, k) kernel, so each curve is convolved on its own with
  'same' padding, and onnxruntime runs one large product per sample over the
  whole batch instead of one small GEMM per sample per curve;
- the first layer unfolds the shared input once (im2col: 4*k channels, by a
  conv with one-hot kernels) and runs ONE dense 1x1 conv producing all
  samples' channels (no tiling of the input S times);
- the later convs are grouped (groups = S); ReLU comes before MaxPool (1, 2),
  which is exact (relu(max(a, b)) = max(relu(a), relu(b))) and lets
  onnxruntime fuse it into the conv; at optimisation level ALL (onnxruntime's
  default, which the runtime keeps) every conv and pool runs in the blocked
  NCHWc layout;
- the fully connected layer is a grouped conv whose kernel spans the whole
  remaining length (1, L/8): per sample the dot product over (channel, q),
  exactly the flatten + Linear of the network;
- the output layer and the novelty whitening read the same hidden activations
  and run as ONE batched MatMul over samples (S, n_out + hidden, hidden) @
  (S, hidden, batch); the projection on the whitened class means follows as a
  second batched MatMul.

Layout ``"batch-major"`` keeps the old axis order (batch, S*C, 1, L) with the
same first layer and fused heads (measured for comparison).

The outputs are those of the old graph (:class:`~sasview_bnn_trainer.novelty.ExportedModel`
exported by torch): ``probabilities`` (batch, S, 7), ``novelty_score`` (batch,)
and, for a network with presence outputs, ``anomaly_probabilities`` (batch, S, 6);
only the order of the floating-point sums inside the products differs. An
empty batch gives empty outputs as before. Inputs with NaN or infinity (which
the runtime's preprocessing never passes on) now give NaN outputs for that
curve, which the runtime refuses as non-finite; the old graph's MaxPool and
ReLU happened to turn them into finite numbers. Curves never mix: the other
curves of the batch are unaffected either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sasview_bnn_plugin.core.model_format import ANOMALY_OUTPUT, INPUT_NAME, NOVELTY_OUTPUT, PROBABILITIES_OUTPUT

from .network import PARAMETER_NAMES, NetworkConfig

OPSET = 17
LAYOUTS: tuple[str, ...] = ("sample-major", "batch-major")
DEFAULT_LAYOUT = "sample-major"


@dataclass
class EnsembleWeights:
    """Everything the exported graph computes with, as float32 numpy arrays.

    ``params``: packed network parameters by name (PARAMETER_NAMES, PackedCNN
    shapes, the S samples stacked along the first axis); ``novelty``: the
    score (a key of :data:`~sasview_bnn_trainer.novelty.NOVELTY_SCORES`).
    The Mahalanobis head: ``whiten`` (S, H, H), ``project`` (S, C, H)
    (whitened class means), ``mean_norms`` (S, C); the kNN head: ``knn_bank``
    (H, B) or (S*H, B) (:meth:`~sasview_bnn_trainer.novelty.KnnNovelty.bank_matrix`, float16 values) and
    ``knn_k``; the other head's arrays are None. ``scales``: (q_F, q_H), the
    divisors of the feature score and the entropy (q_H unused by "knn").
    """

    config: NetworkConfig
    samples: int
    params: dict[str, np.ndarray]
    whiten: np.ndarray | None
    project: np.ndarray | None
    mean_norms: np.ndarray | None
    scales: tuple[float, float]
    novelty: str = "mahalanobis_entropy"
    knn_bank: np.ndarray | None = None
    knn_k: int = 0

    @property
    def knn_features(self) -> str:
        """"mean" (a bank of posterior-mean features, (H, B)) or "samples" ((S*H, B)); the same thing when S = 1."""
        return "mean" if self.knn_bank is not None and self.knn_bank.shape[0] == self.config.hidden else "samples"

    @property
    def n_outputs(self) -> int:
        return self.config.n_classes + self.config.n_anomalies

    @classmethod
    def from_model(cls, model) -> "EnsembleWeights":
        """The weights of an :class:`~sasview_bnn_trainer.novelty.ExportedModel`."""
        net, nov = model.network, model.novelty
        params = {name: net.get_parameter(name).detach().cpu().numpy().astype(np.float32) for name in PARAMETER_NAMES}
        scales = tuple(float(v) for v in model.scales.detach().cpu().numpy())
        if model.score_kind != "mahalanobis_entropy":
            return cls(config=net.config, samples=net.members, params=params, whiten=None, project=None, mean_norms=None,
                       scales=scales, novelty=model.score_kind, knn_bank=nov.bank_matrix(), knn_k=nov.k)
        return cls(config=net.config, samples=net.members, params=params, whiten=nov.whitening_matrices(),
                   project=nov.white_means(), mean_norms=nov.mean_square_norms(), scales=scales)

    @classmethod
    def from_onnx(cls, proto: onnx.ModelProto, config: NetworkConfig | None = None) -> "EnsembleWeights":
        """The weights held by an exported file, in either layout (the old torch-exported graph or :func:`build_graph`).

        ``config`` defaults to the ``network`` metadata entry of the file. The
        network parameters come back bit for bit (only reshaped), so their
        :func:`~sasview_bnn_trainer.export.weights_sha256` matches the file's.
        """
        if config is None:
            meta = {p.key: p.value for p in proto.metadata_props}
            config = NetworkConfig.from_json(meta["network"])
        init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        h, n_out = config.hidden, config.n_classes + config.n_anomalies
        if "heads.weight" in init:  # written by build_graph
            samples = init["heads.weight"].shape[0]
            heads, heads_bias = init["heads.weight"], init["heads.bias"]
            params = {name: init[name] for name in PARAMETER_NAMES if not name.startswith("out.")}
            params["out.weight"] = heads[:, :n_out].reshape(samples * n_out, h, 1)
            params["out.bias"] = heads_bias[:, :n_out, 0].reshape(samples * n_out)
            params["conv1.weight"] = params["conv1.weight"].reshape(-1, config.in_channels, config.kernel)
            for name in ("conv2.weight", "conv3.weight"):
                params[name] = params[name][:, :, 0, :]
            params["fc.weight"] = params["fc.weight"].reshape(samples * h, -1, 1)
            scales = init["novelty.scales"]
            if "novelty.knn_bank" in init:  # one scale: the kNN score alone
                q = (float(scales[0]), float(scales[1]) if scales.size > 1 else 1.0)
                return cls(config, samples, {n: params[n] for n in PARAMETER_NAMES}, None, None, None, q,
                           "knn_entropy" if scales.size > 1 else "knn", init["novelty.knn_bank"].astype(np.float32),
                           int(init["novelty.knn_k"][0]))
            return cls(config, samples, {n: params[n] for n in PARAMETER_NAMES}, heads[:, n_out:], init["novelty.project"],
                       init["novelty.mean_norms"][:, :, 0], (float(scales[0]), float(scales[1])))
        params = {name: init[f"network.{name}"] for name in PARAMETER_NAMES}
        samples = params["conv1.bias"].shape[0] // config.channels[0]
        whiten = init["novelty.whiten.weight"].reshape(samples, h, h)
        project = init["novelty.project.weight"].reshape(samples, -1, h)
        mean_norms = init["novelty.mean_norms"].reshape(samples, -1)
        # The two scales are the divisors of the Div nodes that feed the novelty_score Max:
        # the first reads the Mahalanobis term (from the novelty head), the second the entropy.
        producers = {out: node for node in proto.graph.node for out in node.output}
        (score,) = [n for n in proto.graph.node if NOVELTY_OUTPUT in n.output]
        divs = [producers[name] for name in score.input]
        if not all(d.op_type == "Div" for d in divs):
            raise ValueError("the file's novelty score is not max(M / q_M, H / q_H); it cannot be read back")
        if "novelty" not in divs[0].input[0] and "novelty" in divs[1].input[0]:
            divs.reverse()
        q_m, q_h = (_constant(d.input[1], init, producers) for d in divs)
        return cls(config, samples, params, whiten, project, mean_norms, (q_m, q_h))


def _constant(name: str, init: dict[str, np.ndarray], producers: dict) -> float:
    if name in init:
        return float(init[name])
    node = producers[name]
    assert node.op_type == "Constant"
    return float(numpy_helper.to_array(node.attribute[0].t))


class _Graph:
    """A small helper collecting nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        value = np.asarray(value)
        if value.dtype == np.float64:
            value = value.astype(np.float32)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def ints(self, values) -> str:
        self._count += 1
        return self.const(f"c{self._count}", np.asarray(values, dtype=np.int64))

    def op(self, op_type: str, inputs: list[str], out: str | None = None, n_outputs: int = 1, **attrs) -> str:
        """Add a node; its first output's name (an operator's other outputs get that name + "_1", "_2", ...)."""
        self._count += 1
        out = out or f"{op_type.lower()}{self._count}"
        outputs = [out] + [f"{out}_{i}" for i in range(1, n_outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=f"{op_type}_{self._count}", **attrs))
        return out


def build_graph(weights: EnsembleWeights, layout: str = DEFAULT_LAYOUT) -> onnx.ModelProto:
    """The ONNX model (no metadata) computing the exported outputs from ``weights`` in ``layout``."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown graph layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    cfg, s, p = weights.config, weights.samples, weights.params
    c3 = cfg.channels[2]
    k, pad, hdim, n_out, n_cls = cfg.kernel, cfg.kernel // 2, cfg.hidden, weights.n_outputs, cfg.n_classes
    length = cfg.n_bins // 8
    g = _Graph()
    # Every weight is stored once, in the shape the graph uses (conv weights (out, in, 1, k); the FC as a
    # conv over the whole remaining length, (S*H, c3, 1, L/8), flatten order channel then q; the output
    # layer and the whitening stacked per sample); EnsembleWeights.from_onnx undoes the reshapes.
    w1 = g.const("conv1.weight", p["conv1.weight"].reshape(s * cfg.channels[0], cfg.in_channels * k, 1, 1))
    w2 = g.const("conv2.weight", p["conv2.weight"][:, :, None, :])
    w3 = g.const("conv3.weight", p["conv3.weight"][:, :, None, :])
    fc_in = c3 if cfg.pooling == "average" else c3 * length
    assert p["fc.weight"].shape == (s * hdim, fc_in, 1), p["fc.weight"].shape
    wfc = g.const("fc.weight", p["fc.weight"].reshape(s * hdim, c3, 1, fc_in // c3))
    b1, b2, b3, bfc = (g.const(f"{n}.bias", p[f"{n}.bias"]) for n in ("conv1", "conv2", "conv3", "fc"))
    mahalanobis_head = weights.novelty == "mahalanobis_entropy"
    w_heads, b_heads = p["out.weight"].reshape(s, n_out, hdim), p["out.bias"].reshape(s, n_out)[:, :, None]
    if mahalanobis_head:  # the whitening of the novelty head rides along in the heads' product
        w_heads = np.concatenate([w_heads, weights.whiten], axis=1)
        b_heads = np.concatenate([b_heads, np.zeros((s, hdim, 1), np.float32)], axis=1)
    w_heads, b_heads = g.const("heads.weight", w_heads), g.const("heads.bias", b_heads)
    n_scales = 1 if weights.novelty == "knn" else 2
    scales = g.const("novelty.scales", np.asarray(weights.scales[:n_scales], dtype=np.float32))
    conv = dict(kernel_shape=[1, k], pads=[0, pad, 0, pad], strides=[1, 1], dilations=[1, 1])
    pool = dict(kernel_shape=[1, 2], strides=[1, 2])

    # An empty batch gets one row of zeros (a conv over an image of height 0 is refused), cut off at the end;
    # any other batch is copied as it is (a concat with an empty tensor).
    n_rows = g.op("Shape", [INPUT_NAME], "batch_size", start=0, end=1)  # [B]
    pad_rows = g.op("Max", [g.op("Sub", [g.ints([1]), n_rows]), g.ints([0])])
    padding = g.op("ConstantOfShape", [g.op("Concat", [pad_rows, g.ints([cfg.in_channels, cfg.n_bins])], axis=0)],
                   value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    features = g.op("Concat", [INPUT_NAME, padding], "features_at_least_one", axis=0)
    if layout == "sample-major":
        x = g.op("Transpose", [features], perm=[1, 0, 2])  # (4, B, L)
        x = g.op("Unsqueeze", [x, g.ints([0])])  # (1, 4, B, L)
    else:
        x = g.op("Unsqueeze", [features, g.ints([2])])  # (B, 4, 1, L)
    # ReLU before the pooling: relu(max(a, b)) == max(relu(a), relu(b)) exactly, and onnxruntime fuses Conv + ReLU.
    # The first layer: the shared input unfolded once (im2col, 4*k channels: c*k + j holds x_c[q + j - pad],
    # zero outside), then ONE dense 1x1 conv producing all samples' channels. onnxruntime runs that as a
    # blocked (NCHWc) pointwise conv: faster, and closer to the float64 answer, than its direct conv with 4
    # input channels. The unfolding is a conv with one-hot kernels (one node instead of Pad + k Slices +
    # Concat, measured faster); it copies exactly: x * 1 plus a sum of (+-)0.
    c_in = cfg.in_channels
    one_hot = np.zeros((c_in * k, 1, 1, k), np.float32)
    for c in range(c_in):
        one_hot[c * k + np.arange(k), 0, 0, np.arange(k)] = 1.0
    x = g.op("Conv", [x, g.const("unfold.weight", one_hot)], "unfolded", group=c_in, kernel_shape=[1, k], pads=[0, pad, 0, pad])
    h = g.op("Conv", [x, w1, b1], group=1, kernel_shape=[1, 1])
    h = g.op("MaxPool", [g.op("Relu", [h])], **pool)
    h = g.op("Conv", [h, w2, b2], group=s, **conv)
    h = g.op("MaxPool", [g.op("Relu", [h])], **pool)
    h = g.op("Conv", [h, w3, b3], group=s, **conv)
    h = g.op("MaxPool", [g.op("Relu", [h])], **pool)
    if cfg.pooling == "average":
        h = g.op("ReduceMean", [h], axes=[3], keepdims=1)
        fc_kernel = [1, 1]
    else:
        fc_kernel = [1, length]
    h = g.op("Conv", [h, wfc, bfc], group=s, kernel_shape=fc_kernel, pads=[0, 0, 0, 0], strides=[1, 1])
    h = g.op("Relu", [h])  # sample-major (1, S*H, B, 1); batch-major (B, S*H, 1, 1)

    # Heads: [out; whiten] of every sample in one batched MatMul, (S, n_out + H, H) @ (S, H, B).
    if layout == "sample-major":
        hid = g.op("Reshape", [h, g.ints([s, hdim, -1])])  # (S, H, B)
    else:
        hid = g.op("Transpose", [g.op("Reshape", [h, g.ints([-1, s, hdim])])], perm=[1, 2, 0])  # (S, H, B)
    heads = g.op("Add", [g.op("MatMul", [w_heads, hid]), b_heads])  # (S, n_out [+ H], B)
    if mahalanobis_head:
        logits = g.op("Slice", [heads, g.ints([0]), g.ints([n_out]), g.ints([1])])
        z = g.op("Slice", [heads, g.ints([n_out]), g.ints([n_out + hdim]), g.ints([1])])  # whitened hidden (S, H, B)
        feature = _mahalanobis(g, z, weights)
    else:
        logits = heads
        feature = _knn(g, hid, weights)

    logits = g.op("Transpose", [logits], perm=[2, 0, 1])  # (B, S, n_out)
    cls = g.op("Slice", [logits, g.ints([0]), g.ints([n_cls]), g.ints([2])])
    probs = g.op("Softmax", [cls], axis=-1)
    mean = g.op("ReduceMean", [probs], axes=[1], keepdims=0)
    log = g.op("Log", [g.op("Clip", [mean, g.const("tiny", np.asarray(1e-12, np.float32)), ""])])
    entropy = g.op("Neg", [g.op("ReduceSum", [g.op("Mul", [mean, log]), g.ints([1])], keepdims=0)])
    score = g.op("Div", [feature, g.op("Gather", [scales, g.ints(0)], axis=0)])
    if n_scales == 2:
        score = g.op("Max", [score, g.op("Div", [entropy, g.op("Gather", [scales, g.ints(1)], axis=0)])])
    zero, axis0 = g.ints([0]), g.ints([0])
    g.op("Slice", [probs, zero, n_rows, axis0], PROBABILITIES_OUTPUT)
    g.op("Slice", [score, zero, n_rows, axis0], NOVELTY_OUTPUT)
    outputs = [helper.make_tensor_value_info(PROBABILITIES_OUTPUT, TensorProto.FLOAT, ["batch", s, n_cls]),
               helper.make_tensor_value_info(NOVELTY_OUTPUT, TensorProto.FLOAT, ["batch"])]
    if cfg.n_anomalies:
        presence = g.op("Slice", [logits, g.ints([n_cls]), g.ints([n_out]), g.ints([2])])
        g.op("Slice", [g.op("Sigmoid", [presence]), zero, n_rows, axis0], ANOMALY_OUTPUT)
        outputs.append(helper.make_tensor_value_info(ANOMALY_OUTPUT, TensorProto.FLOAT, ["batch", s, cfg.n_anomalies]))
    graph = helper.make_graph(
        g.nodes, "sasview_bnn_ensemble",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", cfg.in_channels, cfg.n_bins])],
        outputs, g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sasview-bnn-train")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _mahalanobis(g: _Graph, z: str, weights: EnsembleWeights) -> str:
    """mean_s min_c |z - W mu_c|^2 = |z|^2 - 2 z.(W mu_c) + |W mu_c|^2, clipped at 0, of the whitened hidden z (S, H, B) -> (B,)."""
    project = g.const("novelty.project", weights.project)
    mean_norms = g.const("novelty.mean_norms", weights.mean_norms[:, :, None])
    dots = g.op("MatMul", [project, z])  # (S, C, B)
    z_norms = g.op("ReduceSumSquare", [z], axes=[1], keepdims=1)  # (S, 1, B)
    two = g.const("two", np.asarray(2.0, np.float32))
    dist = g.op("Sub", [z_norms, g.op("Mul", [dots, two])])
    dist = g.op("Add", [dist, mean_norms])
    dist = g.op("Clip", [dist, g.const("zero", np.asarray(0.0, np.float32)), ""])
    return g.op("ReduceMean", [g.op("ReduceMin", [dist], axes=[1], keepdims=0)], axes=[0], keepdims=0)  # (B,)


def _knn(g: _Graph, hid: str, weights: EnsembleWeights) -> str:
    """1 - the k-th largest cosine similarity of the hidden activations (S, H, B) to the bank -> (B,).

    The compared vectors (the posterior-mean features, (H, B), or every
    sample's, (S*H, B)) are divided by their norms (at least 1e-12); they and
    the bank (float16 in the file, cast once to float32) meet in ONE Gemm
    (transA), the k largest similarities of every curve come from TopK, the
    k-th is their minimum.

    All in float32. The score's difference from the float64 answer (1e-6 of
    it on the shipped network, a few 1e-6 on tiny test networks) comes mostly
    from the float32 rounding of the features themselves, which a small
    distance 1 - sim amplifies: float64 similarities (tried) only halve it,
    at +2.5 % time per curve at batch 1024 and +12 % for a single curve.
    """
    s, hdim = weights.samples, weights.config.hidden
    bank = g.op("Cast", [g.const("novelty.knn_bank", weights.knn_bank.astype(np.float16))], to=TensorProto.FLOAT)
    k = g.const("novelty.knn_k", np.asarray([weights.knn_k], np.int64))
    if weights.knn_features == "mean":
        vectors, axis = g.op("ReduceMean", [hid], axes=[0], keepdims=0), 0  # (H, B)
    else:
        vectors, axis = hid, 1  # (S, H, B), normalised per sample
    norms = g.op("Sqrt", [g.op("ReduceSumSquare", [vectors], axes=[axis], keepdims=1)])
    norms = g.op("Max", [norms, g.const("knn_min_norm", np.asarray(1e-12, np.float32))])
    unit = g.op("Reshape", [g.op("Div", [vectors, norms]), g.ints([weights.knn_bank.shape[0], -1])])  # (D, B)
    similarity = g.op("Gemm", [unit, bank], transA=1)  # (B, bank size)
    top = g.op("TopK", [similarity, k], n_outputs=2, axis=1, largest=1, sorted=1)  # (B, k)
    kth = g.op("ReduceMin", [top], axes=[1], keepdims=0)
    return g.op("Sub", [g.const("one", np.asarray(1.0, np.float32)), kth])
