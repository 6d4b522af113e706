"""Training of an approximate posterior on a simulated curve file, with checkpoints.

:func:`fit` preprocesses the curve file once (cached features file, see
:mod:`sasview_bnn_trainer.features`), splits the accepted curves into training
and validation sets (seeded), and minimises the posterior's per-batch objective
with Adam, streaming shuffled batches from HDF5. After every epoch it
evaluates the posterior predictive on the validation set and writes to the run
directory:

- ``checkpoint.pt``      posterior weights + spec, optimiser state, history (the run)
- ``history.json``       per-epoch training loss and validation metrics
- ``training_curves.png``
- ``run.json``           the fit settings, data provenance and final metrics

For a seed on CPU the result is deterministic (initialisation, split, batch
order and the variational noise all derive from the seed and the epoch), also
across ``resume``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from sasview_bnn_plugin import __version__
from sasview_bnn_plugin.core.preprocessing import CHANNELS, PreprocessingConfig
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES, N_CLASSES, class_index

from .evaluation.metrics import classification_summary, presence_summary
from .features import PREPARE_BATCH, FeatureFile, build_features, check_leave_out, run_split
from .network import NetworkConfig, pack_members
from .posterior import LOSSES, METHODS, Posterior, build_posterior, posterior_from_spec

CHECKPOINT = "checkpoint.pt"
#: Synthetic outlier curves prepared once per run for outlier exposure (at most; a fifth of
#: the training curves, at least 1,000, for small runs).
OUTLIER_POOL_SIZE = 20_000
DEFAULT_SAMPLES = {"vi": 32, "ensemble": 8}
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")


def outlier_pool(n: int, seed: int, preprocessing_json: str) -> np.ndarray:
    """Features (n, channels, bins) float32 of ``n`` synthetic outliers, with the run's preprocessing."""
    from sasview_bnn_plugin.core.preprocessing import CurveError, PreprocessingConfig, prepare_many

    from .simulation.outliers import outlier_curves

    cfg = PreprocessingConfig.from_json(preprocessing_json)
    curves = list(outlier_curves(n, seed))
    rows = []
    for first in range(0, len(curves), PREPARE_BATCH):
        outcomes = prepare_many([(c.q, c.intensity, c.d_intensity, c.q_unit) for c in curves[first : first + PREPARE_BATCH]], cfg)
        rows.extend(o.features for o in outcomes if not isinstance(o, CurveError))
    return np.stack(rows)


def learning_rate(config: "FitConfig", step: int, total_steps: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based) out of ``total_steps``."""
    if config.lr_schedule == "constant":
        return config.lr
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


@dataclass
class FitConfig:
    """Settings of one training run (see ``sasview-bnn-train fit --help``).

    ``samples``: ensemble size K for "ensemble"; number of posterior draws used
    for validation for "vi" (None: 8 members / 32 draws). ``mc_samples``: VI
    weight draws per training batch. ``kl_weight``: VI only, the factor on
    KL/N (1 = ELBO, < 1 a tempered posterior). ``lr_schedule``: "constant", or
    "cosine" (the learning rate falls from ``lr`` to 0 along a half cosine over
    all steps of ``epochs`` epochs; continuing a run with more epochs stretches it).
    ``split_seed``: seed of the training/validation split (None: ``seed``), so
    that runs of several ``seed`` can share their validation curves.
    ``outlier_fraction``: outlier exposure -- this many synthetic non-scattering
    curves per training curve are added to every batch (from a fixed pool of
    :data:`OUTLIER_POOL_SIZE`, :mod:`~sasview_bnn_trainer.simulation.outliers`),
    with a uniform target over the classes, their term weighted by
    ``outlier_weight``; 0 turns it off. ``visibility_weight`` > 0 gives the
    network auxiliary outputs that regress each anomaly's visibility score
    (points moved, what ranks the anomalies of a mixture), trained with this
    factor and dropped at export; 0 (default) trains without them.
    """

    method: str = "vi"
    epochs: int = 10
    samples: int | None = None
    exclude_classes: tuple[str, ...] = ()
    exclude_families: tuple[str, ...] = ()
    device: str = "auto"
    seed: int = 0
    lr: float = 1e-3
    batch_size: int = 64
    val_fraction: float = 0.2
    prior_sigma: float = 1.0
    loss: str = "nll"
    mc_samples: int = 1
    kl_weight: float = 1.0
    lr_schedule: str = "constant"
    outlier_fraction: float = 0.0
    outlier_weight: float = 0.5
    network: NetworkConfig = field(default_factory=NetworkConfig)
    max_train: int | None = None
    extra_channels: tuple[str, ...] = ()
    visibility_weight: float = 0.0
    noise_scale: str = PreprocessingConfig.noise_scale
    split_seed: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        for name in self.exclude_classes:
            class_index(name)
        for name in self.exclude_families:
            check_leave_out(name)
        if len(set(self.exclude_classes)) >= N_CLASSES - 1:
            raise ValueError("at least two classes must remain for training")
        if not 0.0 <= self.outlier_fraction < 1.0:
            raise ValueError(f"the outlier fraction must lie in [0, 1), got {self.outlier_fraction}")
        if not self.outlier_weight > 0.0:
            raise ValueError(f"the outlier weight must be positive, got {self.outlier_weight}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {self.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
        if not 0.0 < self.kl_weight <= 1.0:
            raise ValueError(f"the KL weight must lie in (0, 1] (1 is the ELBO), got {self.kl_weight}")
        if self.kl_weight != 1.0 and self.method != "vi":
            raise ValueError("the KL weight applies to --method vi only")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs, batch size and learning rate must be positive")
        self.extra_channels = tuple(self.extra_channels)
        if not self.visibility_weight >= 0.0:
            raise ValueError(f"the visibility weight must be 0 (off) or positive, got {self.visibility_weight}")
        if self.visibility_weight > 0 and not self.network.n_anomalies:
            raise ValueError("the visibility outputs need the anomalies-present outputs (drop --no-presence)")
        n_visibility = self.network.n_anomalies if self.visibility_weight > 0 else 0
        if self.network.n_visibility != n_visibility:
            self.network = dataclasses.replace(self.network, n_visibility=n_visibility)
        n_inputs = len(self.preprocessing.channels)  # checks the names
        if self.network.in_channels != n_inputs:
            self.network = dataclasses.replace(self.network, in_channels=n_inputs)
        if self.samples is None:
            self.samples = DEFAULT_SAMPLES[self.method]
        if self.samples < 1:
            raise ValueError("the number of posterior samples must be at least 1")
        if self.max_train is not None and self.max_train < 1:
            raise ValueError(f"--max-train must be a positive number of curves, got {self.max_train}")

    @property
    def preprocessing(self) -> PreprocessingConfig:
        """The preprocessing of the run: the default settings, with ``extra_channels`` after the four default channels
        and the network's number of q bins; ``noise_scale`` as in the preprocessing (``"scatter"``: each curve's dI
        rescaled to its own scatter)."""
        return PreprocessingConfig(channels=CHANNELS + self.extra_channels, n_bins=self.network.n_bins,
                                   noise_scale=self.noise_scale)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["network"] = dataclasses.asdict(self.network)
        d["exclude_classes"] = list(self.exclude_classes)
        d["exclude_families"] = list(self.exclude_families)
        d["extra_channels"] = list(self.extra_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FitConfig":
        d = dict(d)
        net = dict(d.pop("network"))
        net["channels"] = tuple(net["channels"])
        d["exclude_classes"] = tuple(d["exclude_classes"])
        d["exclude_families"] = tuple(d.get("exclude_families", ()))  # runs before leave-family-out
        d["extra_channels"] = tuple(d.get("extra_channels", ()))  # runs before extra input channels
        net.setdefault("n_anomalies", 0)  # runs of version 1 trained the primary class only
        return cls(network=NetworkConfig(**net), **d)


@dataclass
class FitResult:
    """Outcome of :func:`fit`: the trained posterior and where the run lives."""

    posterior: Posterior
    run_dir: Path
    history: list[dict[str, float]]
    features_path: Path
    train_rows: np.ndarray
    val_rows: np.ndarray


def resolve_device(device: str) -> torch.device:
    """"auto" -> CUDA when torch sees one, else CPU; "cuda" without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA GPU")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


def make_posterior(config: FitConfig, n_train: int) -> Posterior:
    """A freshly initialised posterior (the caller seeds torch first), built by the registry (:data:`METHODS`)."""
    return build_posterior(config.method, config.network, config.prior_sigma, n_train, config.loss,
                           mc_samples=config.mc_samples, kl_weight=config.kl_weight, members=int(config.samples))


@torch.no_grad()
def predict_rows(
    posterior: Posterior,
    features: FeatureFile,
    rows: np.ndarray,
    n_samples: int,
    device: torch.device,
    *,
    seed: int = 0,
    batch_size: int = 1024,
    with_presence: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Per-sample probabilities (len(rows), S, classes) of the given feature rows, in row order.

    With ``with_presence`` also the per-sample anomaly-presence probabilities (len(rows), S, n_anomalies).
    """
    net = pack_members(posterior.config, posterior.sample_weights(n_samples, seed)).to(device).eval()
    out, present = [], []
    for x, _ in features.iter_batches(rows, batch_size):
        logits, presence = net(torch.from_numpy(x).to(device), with_presence=True)[:2]
        out.append(torch.softmax(logits, dim=-1).cpu().numpy())
        present.append(torch.sigmoid(presence).cpu().numpy())
    probs = np.concatenate(out) if out else np.zeros((0, n_samples, posterior.config.n_classes), np.float32)
    if not with_presence:
        return probs
    return probs, (np.concatenate(present) if present else np.zeros((0, n_samples, posterior.config.n_anomalies), np.float32))


def _plot_history(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", label="training objective")
    axes[0].plot(epochs, [h["train_data"] for h in history], "s--", label="training data term")
    axes[0].plot(epochs, [h["val_nll"] for h in history], "^-", label="validation NLL")
    axes[0].set_xlabel("epoch")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[1].plot(epochs, [h["val_accuracy"] for h in history], "o-", label="accuracy")
    axes[1].plot(epochs, [h["val_macro_f1"] for h in history], "s-", label="macro-F1")
    axes[1].set_xlabel("epoch")
    axes[1].set_title("validation")
    axes[1].legend()
    axes[2].plot(epochs, [h["val_ece"] for h in history], "o-")
    axes[2].set_xlabel("epoch")
    axes[2].set_title("validation ECE (15 bins)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _save_checkpoint(path: Path, posterior: Posterior, optimiser: torch.optim.Optimizer, epoch: int,
                     history: list[dict[str, float]], config: FitConfig, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save(
        {
            "spec": posterior.spec(),
            "state": posterior.state_dict(),
            "optimiser": optimiser.state_dict(),
            "epoch": epoch,
            "history": history,
            "fit_config": config.to_dict(),
            "data": data,
            "package_version": __version__,
        },
        tmp,
    )
    tmp.replace(path)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Posterior, dict[str, Any]]:
    """The trained posterior of a run directory and its checkpoint record (config, data, history)."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} holds no training run ({CHECKPOINT} is missing); run `sasview-bnn-train fit` first")
    record = torch.load(path, map_location=device, weights_only=False)
    posterior = posterior_from_spec(record["spec"])
    posterior.load_state_dict(record["state"])
    return posterior.to(device), record


def fit(
    data_path: str | Path,
    run_dir: str | Path,
    config: FitConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    feature_workers: int = 1,
) -> FitResult:
    """Train ``config.method`` on the curve file ``data_path``; write the run to ``run_dir``."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise FileExistsError(f"{run_dir} already holds a training run; pass --resume to continue it or choose another --out")
    if resume and not ckpt_path.exists():
        raise FileNotFoundError(f"--resume was given but {run_dir} holds no checkpoint")
    device = resolve_device(config.device)
    run_dir.mkdir(parents=True, exist_ok=True)

    features_path = build_features(data_path, config=config.preprocessing, progress=progress, workers=feature_workers)
    features = FeatureFile(features_path)
    try:
        summary = features.summary
        data = {
            "path": str(Path(data_path).resolve()),
            "features_path": str(features_path.resolve()),
            "seed": summary.seed,
            "n_curves": summary.n_curves,
            "n_refused": summary.n_refused,
            "refusals": summary.refusals,
            "code_version": summary.code_version,
            "preprocessing": summary.preprocessing,
            "excluded_classes": list(config.exclude_classes),
            "excluded_families": list(config.exclude_families),
            "n_train": 0,
            "n_val": 0,
            "val_fraction": config.val_fraction,
            "split_seed": config.seed if config.split_seed is None else config.split_seed,
            "max_train": config.max_train,
        }
        train_rows, val_rows = run_split(data, features)  # what export and the studies read back from the record
        if train_rows.size == 0 or val_rows.size == 0:
            raise ValueError(
                f"{data_path} gives {train_rows.size} training and {val_rows.size} validation curves; both must be non-empty"
            )
        data["n_train"], data["n_val"] = int(train_rows.size), int(val_rows.size)

        pool = None
        if config.outlier_fraction > 0:
            pool = outlier_pool(min(OUTLIER_POOL_SIZE, max(1_000, int(train_rows.size) // 5)), config.seed, summary.preprocessing)
        torch.manual_seed(config.seed)
        posterior = make_posterior(config, int(train_rows.size)).to(device)
        posterior.outlier_weight = config.outlier_weight
        posterior.visibility_weight = config.visibility_weight
        optimiser = torch.optim.Adam(posterior.parameters(), lr=config.lr)
        history: list[dict[str, float]] = []
        start_epoch = 1
        if resume:
            record = torch.load(ckpt_path, map_location=device, weights_only=False)
            saved = FitConfig.from_dict(record["fit_config"])
            if {**saved.to_dict(), "epochs": 0, "device": ""} != {**config.to_dict(), "epochs": 0, "device": ""}:
                raise ValueError(f"--resume: the settings differ from those of the run in {run_dir} (only --epochs and --device may change)")
            if record["data"]["path"] != data["path"] or record["data"]["n_train"] != data["n_train"]:
                raise ValueError(f"--resume: {data_path} is not the curve file the run in {run_dir} was trained on")
            posterior.load_state_dict(record["state"])
            optimiser.load_state_dict(record["optimiser"])
            history = list(record["history"])
            start_epoch = int(record["epoch"]) + 1

        for epoch in range(start_epoch, config.epochs + 1):
            posterior.train()
            generator = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + epoch)
            totals: dict[str, float] = {}
            n_seen = 0
            n_batches = math.ceil(train_rows.size / config.batch_size)
            step = (epoch - 1) * n_batches
            multi = config.network.n_anomalies > 0
            batches = features.iter_batches(train_rows, config.batch_size, shuffle_seed=config.seed * 7919 + epoch,
                                            with_anomalies=multi, with_visibility=config.network.n_visibility > 0)
            pick = np.random.default_rng([config.seed, epoch, 31])
            for x, y in tqdm(batches, total=n_batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", disable=not progress, leave=False):
                if pool is not None:
                    extra = pick.integers(0, len(pool), max(1, round(config.outlier_fraction * y.shape[0])))
                    x = np.concatenate([x, pool[extra]])
                    outliers = np.full((extra.size, *y.shape[1:]), -1, dtype=y.dtype)
                    if multi:
                        outliers[:, 1:] = 0  # no anomaly of the taxonomy: not trained on (see posterior.objective)
                    y = np.concatenate([y, outliers])
                xb, yb = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
                loss, parts = posterior.training_loss(xb, yb, generator)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                for group in optimiser.param_groups:
                    group["lr"] = learning_rate(config, step, config.epochs * n_batches)
                optimiser.step()
                step += 1
                for k, v in parts.items():
                    totals[k] = totals.get(k, 0.0) + v * y.shape[0]
                n_seen += y.shape[0]
            if not all(math.isfinite(v) for v in totals.values()):
                raise FloatingPointError(f"the training loss became non-finite in epoch {epoch}; lower --lr")
            posterior.eval()
            probs, presence = predict_rows(posterior, features, val_rows, int(config.samples), device, seed=config.seed,
                                           with_presence=True)
            val = classification_summary(features.labels[val_rows], probs.mean(axis=1), N_CLASSES)
            if multi:
                val.update(presence_summary(features.anomalies[val_rows], presence.mean(axis=1)))
            entry = {"epoch": epoch, "train_loss": totals["loss"] / n_seen, "train_data": totals["data"] / n_seen}
            entry.update({f"train_{k}": v / n_seen for k, v in totals.items() if k not in ("loss", "data")})
            entry["lr_end"] = optimiser.param_groups[0]["lr"]
            entry.update({f"val_{k}": v for k, v in val.items()})
            history.append(entry)
            if progress:
                tqdm.write(
                    f"epoch {epoch}: objective {entry['train_loss']:.4f}, validation accuracy {val['accuracy']:.4f}, "
                    f"NLL {val['nll']:.4f}, ECE {val['ece']:.4f}"
                )
            _save_checkpoint(ckpt_path, posterior, optimiser, epoch, history, config, data)
            (run_dir / "history.json").write_text(json.dumps(history, indent=1))
            _plot_history(history, run_dir / "training_curves.png")

        run_record = {
            "fit_config": config.to_dict(),
            "data": data,
            "final_validation": history[-1] if history else {},
            "classes": list(CLASS_NAMES),
            "package_version": __version__,
            "device": str(device),
        }
        (run_dir / "run.json").write_text(json.dumps(run_record, indent=1))
        return FitResult(posterior, run_dir, history, features_path, train_rows, val_rows)
    finally:
        features.close()
