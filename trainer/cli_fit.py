"""``sasview-bnn-train fit``: train the Bayesian network on a simulated curve file."""

from __future__ import annotations

import argparse
import sys

from sasview_bnn_plugin.core.preprocessing import NOISE_SCALES, PreprocessingConfig
from sasview_bnn_plugin.core.taxonomy import CLASS_NAMES


def _channels(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--channels takes three whole numbers like 8,16,32, got {text!r}") from None
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--channels takes three positive whole numbers like 8,16,32, got {text!r}")
    return values  # type: ignore[return-value]


def _extra_channels(text: str) -> tuple[str, ...]:
    """``density,noise`` -> ("density", "noise"); the preprocessing config is the one judge of channel names."""
    from sasview_bnn_plugin.core.preprocessing import CHANNELS

    names = tuple(v.strip() for v in text.split(",") if v.strip())
    try:
        PreprocessingConfig(channels=CHANNELS + names)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--extra-channels {text!r}: {err}") from None
    return names


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit",
        help="train a mean-field VI or deep-ensemble posterior on a curve file",
        description="Train the Bayesian CNN on DATA.h5 (written by `simulate`). The curves are preprocessed once into "
        "DATA.features.h5 (refused curves are counted and skipped); the run (checkpoint every epoch, history, training "
        "curves PNG) is written to --out.",
    )
    p.add_argument("data", metavar="DATA.h5", help="simulated curve file")
    p.add_argument("--method", choices=("vi", "ensemble"), required=True,
                   help="vi: mean-field variational inference (Bayes by backprop); ensemble: K MAP networks")
    p.add_argument("--out", metavar="RUN/", required=True, help="run directory to create (or continue with --resume)")
    p.add_argument("--epochs", type=int, default=10, help="number of epochs (default 10)")
    p.add_argument("--samples", type=int, default=None,
                   help="ensemble: number of members K (default 8); vi: posterior draws used for validation (default 32)")
    p.add_argument("--exclude-class", action="append", default=[], choices=CLASS_NAMES, metavar="NAME",
                   help="leave this class out of training (repeatable), for leave-one-class-out novelty tests")
    p.add_argument("--exclude-family", action="append", default=[], metavar="NAME",
                   help="leave every curve with a particle of this shape family (sphere, ellipsoid, cylinder, chain, "
                        "generic), or showing lattice:NAME, structure_factor:NAME or artefact:NAME (e.g. lattice:hexagonal, "
                        "structure_factor:stickyhardsphere, artefact:edge_points; an artefact laid on any class counts) out "
                        "of training and validation (repeatable), for leave-family-out tests")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto uses CUDA when torch sees a GPU")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, split, batch order and VI noise (default 0)")
    p.add_argument("--split-seed", type=int, default=None, metavar="SEED",
                   help="seed of the training/validation split alone (default: --seed); runs of several --seed with one "
                        "--split-seed share their validation curves, as `export RUN RUN...` needs")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=64, help="curves per batch (default 64)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="fraction of curves held out for validation (default 0.2)")
    p.add_argument("--prior-sigma", type=float, default=1.0, help="standard deviation of the Gaussian weight prior N(0, sigma^2) (default 1)")
    p.add_argument("--loss", choices=("nll", "mspe"), default="nll",
                   help="data term: nll (cross-entropy, ELBO) or mspe (mean-squared probability error, the seed paper's loss)")
    p.add_argument("--mc-samples", type=int, default=1, help="vi: weight draws per training batch (default 1)")
    p.add_argument("--kl-weight", type=float, default=1.0,
                   help="vi: factor on KL(q||prior)/N in the objective; 1 is the ELBO, < 1 a tempered posterior (default 1)")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="constant learning rate, or cosine decay from --lr to 0 over all epochs (default constant)")
    p.add_argument("--outlier-fraction", type=float, default=0.0,
                   help="outlier exposure: synthetic non-scattering curves added per training curve, trained "
                        "towards a uniform answer (default 0: off; e.g. 0.1)")
    p.add_argument("--outlier-weight", type=float, default=0.5,
                   help="factor on the outlier-exposure term (default 0.5)")
    p.add_argument("--channels", type=_channels, default=(8, 16, 32), help="conv channels of the three layers (default 8,16,32)")
    p.add_argument("--hidden", type=int, default=64, help="width of the fully connected layer (default 64)")
    p.add_argument("--kernel", type=int, default=7, help="conv kernel width, odd (default 7)")
    p.add_argument("--bins", type=int, default=PreprocessingConfig.n_bins, metavar="N",
                   help=f"log-spaced q bins of the model input over the preprocessing's q-domain, a multiple of 8 "
                        f"(default {PreprocessingConfig.n_bins})")
    p.add_argument("--extra-channels", type=_extra_channels, default=(), metavar="NAME[,NAME]",
                   help="model-input channels added after the four default ones: density (points per q-bin) and/or noise "
                        "(relative uncertainty per q-bin), what the visibility rule counts (default: none)")
    p.add_argument("--noise-scale", choices=NOISE_SCALES, default=PreprocessingConfig.noise_scale,
                   help="uncertainties the outlier, jump and noise channels measure against: the dI as files state them "
                        "(default), or each curve's dI rescaled by one factor to its own point-to-point scatter "
                        "where the two disagree significantly (files often state dI off by a large factor)")
    p.add_argument("--visibility-weight", type=float, default=0.0, metavar="W",
                   help="also train outputs that regress each anomaly's visibility score (the points it moves, what "
                        "decides the primary class of a mixture), with this factor on their squared error; training "
                        "only, not exported (default 0: off)")
    p.add_argument("--spectral-norm", type=float, default=0.0, metavar="C",
                   help="cap the spectral norm of every conv and the fully connected weight at C (distance-preserving "
                        "features for the novelty score, as in DDU; e.g. 3; default 0: no cap; --method vi only)")
    p.add_argument("--residual", action="store_true",
                   help="an identity skip connection inside each conv + pool stage (with --spectral-norm: DDU's "
                        "bi-Lipschitz features; folded into the exported conv weights; --method vi only)")
    p.add_argument("--no-presence", action="store_true",
                   help="train the primary class only, without the anomalies-present outputs (a version-1 network)")
    p.add_argument("--max-train", type=int, default=None, metavar="N",
                   help="train on a seeded random subset of N of the training curves (e.g. for leave-one-class-out "
                        "models trained on part of a large file); validation curves are unchanged")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice, all cores); 1 lets two runs share 2 cores")
    p.add_argument("--workers", type=int, default=1, help="processes for the one-off preprocessing (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .fit import FitConfig, fit
    from .network import NetworkConfig

    try:
        config = FitConfig(
            method=args.method, epochs=args.epochs, samples=args.samples, exclude_classes=tuple(args.exclude_class),
            exclude_families=tuple(args.exclude_family),
            device=args.device, seed=args.seed, lr=args.lr, batch_size=args.batch_size, val_fraction=args.val_fraction,
            prior_sigma=args.prior_sigma, loss=args.loss, mc_samples=args.mc_samples,
            kl_weight=args.kl_weight, lr_schedule=args.lr_schedule,
            outlier_fraction=args.outlier_fraction, outlier_weight=args.outlier_weight,
            network=NetworkConfig(channels=args.channels, hidden=args.hidden, kernel=args.kernel, n_bins=args.bins,
                                  n_anomalies=0 if args.no_presence else NetworkConfig.n_anomalies,
                                  spectral_coeff=args.spectral_norm, residual=args.residual),
            max_train=args.max_train, extra_channels=args.extra_channels, visibility_weight=args.visibility_weight,
            split_seed=args.split_seed,
            noise_scale=args.noise_scale,
        )
        if args.threads is not None:
            import torch

            torch.set_num_threads(max(1, args.threads))
        result = fit(args.data, args.out, config, resume=args.resume, progress=not args.quiet, feature_workers=args.workers)
    except (ValueError, OSError, FloatingPointError) as err:
        print(f"sasview-bnn-train fit: error: {err}", file=sys.stderr)
        return 1
    last = result.history[-1] if result.history else {}
    print(f"trained {config.method} for {len(result.history)} epoch(s) on {result.train_rows.size} curves; "
          f"validation accuracy {last.get('val_accuracy', float('nan')):.4f}, ECE {last.get('val_ece', float('nan')):.4f}; "
          f"run in {result.run_dir}")
    return 0
