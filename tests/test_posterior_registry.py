"""The posterior registry (``sasview_bnn_trainer.posterior.METHODS``) is the one place a method is built."""

import pytest

torch = pytest.importorskip("torch")

from sasview_bnn_trainer.fit import FitConfig, make_posterior  # noqa: E402
from sasview_bnn_trainer.network import NetworkConfig  # noqa: E402
from sasview_bnn_trainer.posterior import METHODS, DeepEnsemble, MeanFieldVI, build_posterior, posterior_from_spec  # noqa: E402

SMALL = NetworkConfig(channels=(4, 6, 8), hidden=16, kernel=5)


def test_every_method_is_built_from_its_name_with_only_its_own_options():
    options = {"mc_samples": 3, "init_sigma": 2e-3, "kl_weight": 0.5, "members": 2}
    vi = build_posterior("vi", SMALL, 1.0, 100, "nll", **options)
    ensemble = build_posterior("ensemble", SMALL, 1.0, 100, "nll", **options)
    assert isinstance(vi, MeanFieldVI) and (vi.mc_samples, vi.init_sigma, vi.kl_weight) == (3, 2e-3, 0.5)
    assert isinstance(ensemble, DeepEnsemble) and ensemble.n_members == 2
    assert set(METHODS) == {"vi", "ensemble"} and all(METHODS[name].method == name for name in METHODS)
    with pytest.raises(ValueError, match="unknown inference method 'laplace'; choose one of vi, ensemble"):
        build_posterior("laplace", SMALL, 1.0, 100)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_spec_rebuilds_the_same_posterior(method):
    torch.manual_seed(0)
    original = build_posterior(method, SMALL, 0.5, 40, "mspe", mc_samples=2, kl_weight=0.25, members=3)
    rebuilt = posterior_from_spec(original.spec())
    assert type(rebuilt) is type(original) and rebuilt.spec() == original.spec()


@pytest.mark.parametrize("method, expected", [("vi", MeanFieldVI), ("ensemble", DeepEnsemble)])
def test_fit_builds_its_posterior_through_the_registry(method, expected):
    config = FitConfig(method=method, network=SMALL, samples=2, mc_samples=2, kl_weight=0.5 if method == "vi" else 1.0)
    posterior = make_posterior(config, 50)
    assert isinstance(posterior, expected)
    if method == "vi":
        assert (posterior.mc_samples, posterior.kl_weight) == (2, 0.5)
    else:
        assert posterior.n_members == 2
