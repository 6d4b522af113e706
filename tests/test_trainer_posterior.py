"""The packed network layout, the posteriors' objectives and the in-graph novelty score."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sasview_bnn_trainer.export import MahalanobisNovelty
from sasview_bnn_trainer.network import NetworkConfig, PackedCNN, pack_members
from sasview_bnn_trainer.posterior import DeepEnsemble, MeanFieldVI, data_loss, gaussian_kl

SMALL = NetworkConfig(channels=(4, 6, 8), hidden=16, kernel=5)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(50, generator=g) * 0.3
    sigma = torch.rand(50, generator=g) * 0.2 + 1e-3
    for prior in (0.05, 0.1, 1.0):
        expected = torch.distributions.kl_divergence(
            torch.distributions.Normal(mu, sigma), torch.distributions.Normal(torch.zeros(50), torch.full((50,), prior))
        ).sum()
        torch.testing.assert_close(gaussian_kl(mu, sigma, prior), expected)


def test_vi_kl_covers_every_weight_and_enters_the_loss_divided_by_n():
    torch.manual_seed(0)
    vi = MeanFieldVI(SMALL, prior_sigma=0.2, n_train=1000)
    mu = torch.cat([p.flatten() for p in vi.mu.values()])
    sigma = torch.cat([torch.nn.functional.softplus(p).flatten() for p in vi.rho.values()])
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mu, sigma), torch.distributions.Normal(0.0, 0.2)).sum()
    torch.testing.assert_close(vi.kl(), expected)
    x, y = torch.randn(16, 4, 256), torch.randint(0, 7, (16,))
    _, parts = vi.training_loss(x, y, torch.Generator().manual_seed(1))
    assert parts["kl_per_curve"] == pytest.approx(float(expected.detach()) / 1000, rel=1e-5)
    assert parts["loss"] == pytest.approx(parts["data"] + parts["kl_per_curve"], rel=1e-5)


def test_packed_members_equal_separate_networks():
    torch.manual_seed(3)
    packed = PackedCNN(SMALL, members=5).eval()
    x = torch.randn(9, 4, 256)
    logits = packed(x)
    for k in range(5):
        single = pack_members(SMALL, [packed.member_state(k)]).eval()
        torch.testing.assert_close(logits[:, k], single(x)[:, 0], rtol=1e-5, atol=1e-6)
    hidden = packed.hidden_features(x)
    assert hidden.shape == (9, 5, SMALL.hidden)


def test_ensemble_members_do_not_share_gradients():
    torch.manual_seed(0)
    ens = DeepEnsemble(SMALL, prior_sigma=0.5, n_train=100, members=3)
    x, y = torch.randn(8, 4, 256), torch.randint(0, 7, (8,))
    loss, _ = ens.training_loss(x, y)
    loss.backward()
    full = ens.net.conv1.weight.grad.clone()
    # member 1 alone: same objective restricted to its own weights
    single = pack_members(SMALL, [ens.net.member_state(1)])
    for p in single.parameters():
        p.requires_grad_(True)
    own = data_loss(single(x), y, "nll").sum() + sum((p**2).sum() for p in single.parameters()) / (2 * 0.5**2 * 100)
    own.backward()
    rows = full.shape[0] // 3
    torch.testing.assert_close(full[rows : 2 * rows], single.conv1.weight.grad, rtol=1e-4, atol=1e-7)


def test_mspe_is_the_summed_squared_probability_error():
    logits = torch.tensor([[[2.0, 0.0, 0, 0, 0, 0, 0]], [[0.0, 0.0, 0, 0, 0, 0, 0]]])
    labels = torch.tensor([0, 3])
    p = torch.softmax(logits, dim=-1)[:, 0]
    expected = ((p - torch.nn.functional.one_hot(labels, 7)) ** 2).sum(dim=1).mean()
    torch.testing.assert_close(data_loss(logits, labels, "mspe"), expected[None])
    assert float(data_loss(torch.tensor([[[50.0, 0, 0, 0, 0, 0, 0]]]), torch.tensor([0]), "mspe")) < 1e-12


def test_vi_samples_are_reproducible_and_spread_like_the_posterior():
    torch.manual_seed(0)
    vi = MeanFieldVI(SMALL, prior_sigma=0.2, n_train=10, init_sigma=0.05)
    a, b = vi.sample_weights(3, seed=7), vi.sample_weights(3, seed=7)
    for sa, sb in zip(a, b):
        for name in sa:
            torch.testing.assert_close(sa[name], sb[name])
    draws = torch.stack([s["fc.weight"] for s in vi.sample_weights(200, seed=1)])
    assert float((draws.std(dim=0) / 0.05).mean()) == pytest.approx(1.0, abs=0.05)
    torch.testing.assert_close(draws.mean(dim=0), vi.mu["fc__weight"].detach(), atol=0.02, rtol=0)


def test_in_graph_mahalanobis_matches_numpy():
    rng = np.random.default_rng(0)
    s, c, h = 3, 4, 5
    means = rng.normal(size=(s, c, h))
    covs = [np.cov(rng.normal(size=(h, 50))) + 0.1 * np.eye(h) for _ in range(s)]
    whiten = np.stack([np.linalg.cholesky(np.linalg.inv(cv)).T for cv in covs])
    head = MahalanobisNovelty(means, whiten)
    hid = rng.normal(size=(7, s, h))
    got = head(torch.from_numpy(hid.reshape(7, s * h, 1).astype(np.float32))).numpy()
    expected = np.mean(
        [[min((hid[b, k] - means[k, j]) @ np.linalg.inv(covs[k]) @ (hid[b, k] - means[k, j]) for j in range(c)) for k in range(s)] for b in range(7)],
        axis=1,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_vi_kl_weight_scales_only_the_kl_term():
    x, y = torch.randn(16, 4, 256), torch.randint(0, 7, (16,))
    parts = {}
    for weight in (1.0, 0.1):
        torch.manual_seed(0)
        vi = MeanFieldVI(SMALL, prior_sigma=0.2, n_train=1000, kl_weight=weight)
        loss, parts[weight] = vi.training_loss(x, y, torch.Generator().manual_seed(1))
        assert float(loss) == pytest.approx(parts[weight]["data"] + weight * parts[weight]["kl_per_curve"], rel=1e-5)
    assert parts[0.1]["data"] == pytest.approx(parts[1.0]["data"], rel=1e-6)
    assert parts[0.1]["kl_per_curve"] == pytest.approx(parts[1.0]["kl_per_curve"], rel=1e-6)
    with pytest.raises(ValueError, match="KL weight"):
        MeanFieldVI(SMALL, prior_sigma=0.2, n_train=1000, kl_weight=0.0)


def test_outlier_rows_are_pulled_towards_the_uniform_answer():
    """Outlier exposure: label -1 means "no class"; its target is 1/7 for every class."""
    torch.manual_seed(0)
    logits = torch.randn(5, 2, 7)
    labels = torch.tensor([0, 3, -1, 6, -1])
    log_p = torch.log_softmax(logits, dim=-1)
    picked = torch.stack([-log_p[i, :, int(y)] if y >= 0 else -0.25 * log_p[i].mean(dim=-1) for i, y in enumerate(labels)])
    torch.testing.assert_close(data_loss(logits, labels, "nll", outlier_weight=0.25), picked.mean(dim=0))
    p = torch.softmax(logits, dim=-1)
    uniform = ((p - 1 / 7) ** 2).sum(dim=-1)
    assert torch.allclose(data_loss(logits, labels, "mspe", outlier_weight=1.0)[0],
                          torch.stack([((p[i] - torch.nn.functional.one_hot(labels[i], 7)) ** 2).sum(-1) if labels[i] >= 0
                                       else uniform[i] for i in range(5)]).mean(dim=0)[0])
    # The uniform answer minimises the outlier term: a flat logit row has the lowest loss.
    flat = data_loss(torch.zeros(1, 1, 7), torch.tensor([-1]), "nll")
    assert float(flat) == pytest.approx(np.log(7))
    assert float(data_loss(torch.tensor([[[3.0, 0, 0, 0, 0, 0, 0]]]), torch.tensor([-1]), "nll")) > float(flat)


def test_outlier_curves_are_model_input_and_not_scattering_curves():
    from sasview_bnn_plugin.core.preprocessing import prepare_curve
    from sasview_bnn_trainer.evaluation.novel_inputs import KINDS
    from sasview_bnn_trainer.simulation.outliers import OUTLIER_KINDS, outlier_curves

    assert not set(OUTLIER_KINDS) & set(KINDS), "the evaluation's novel inputs must stay unseen in training"
    curves = outlier_curves(50, seed=3)
    assert [c.params["shape"] for c in curves[:5]] == list(OUTLIER_KINDS)
    assert all(c.label == -1 for c in curves)
    for c in curves:
        assert prepare_curve(c.q, c.intensity, c.d_intensity, c.q_unit).features.shape == (4, 256)
    again = outlier_curves(50, seed=3)
    assert all(np.array_equal(a.intensity, b.intensity) for a, b in zip(curves, again))


DDU = NetworkConfig(channels=(4, 6, 8), hidden=16, kernel=5, spectral_coeff=0.9, residual=True)


def _reference_stage(x, w_raw, b, coeff):
    """One conv + pool stage written out the long way: conv with the capped weight, plus the skip, then ReLU and pool."""
    from torch.nn import functional as F

    sigma = torch.linalg.svdvals(w_raw.reshape(w_raw.shape[0], -1))[0]
    w = w_raw * min(1.0, coeff / float(sigma))
    y = F.conv1d(x, w, b, padding=w.shape[2] // 2)
    n = min(w.shape[0], w.shape[1])
    y[:, :n] += x[:, :n]
    return F.relu(F.max_pool1d(y, 2))


def test_skip_and_spectral_cap_are_the_long_way_round_and_exported_as_plain_weights():
    from sasview_bnn_trainer.network import effective_state, reparameterised

    assert reparameterised(DDU) and not reparameterised(SMALL)
    torch.manual_seed(4)
    raw = {name: p.detach() * 3.0 for name, p in PackedCNN(DDU, 1).named_parameters()}  # norms well above the cap
    eff = effective_state(DDU, raw)
    x = torch.randn(5, 4, 256)
    h = x
    for i in (1, 2, 3):
        h = _reference_stage(h, raw[f"conv{i}.weight"], raw[f"conv{i}.bias"], 0.9)
    net = pack_members(DDU, [eff]).eval()
    torch.testing.assert_close(net._hidden(x)[:, :, 0], torch.relu(
        torch.nn.functional.linear(h.reshape(5, -1), eff["fc.weight"][:, :, 0], eff["fc.bias"])), rtol=1e-5, atol=1e-5)
    # the cap holds on the FC, the output layer is free, and a small weight is left as it is
    assert float(torch.linalg.svdvals(eff["fc.weight"][:, :, 0])[0]) == pytest.approx(0.9, rel=1e-4)
    torch.testing.assert_close(eff["out.weight"], raw["out.weight"])
    small = {k: v / 1e3 for k, v in raw.items()}
    torch.testing.assert_close(effective_state(NetworkConfig(**{**DDU.__dict__, "residual": False}), small)["fc.weight"],
                               small["fc.weight"])
    assert NetworkConfig.from_json(DDU.to_json()) == DDU
    assert NetworkConfig.from_json(SMALL.to_json().replace(', "residual": false', "")) == SMALL


def test_vi_with_ddu_features_trains_through_the_cap_and_samples_effective_weights():
    from sasview_bnn_trainer.network import effective_state

    torch.manual_seed(0)
    vi = MeanFieldVI(DDU, prior_sigma=0.2, n_train=100)
    x, y = torch.randn(8, 4, 256), torch.randint(0, 7, (8,))
    loss, _ = vi.training_loss(x, y, torch.Generator().manual_seed(1))
    loss.backward()
    assert all(float(p.grad.abs().sum()) > 0 for p in vi.mu.values())
    (state,) = vi.sample_weights(1, seed=2)
    c1 = state["conv1.weight"]
    assert float(torch.linalg.svdvals((c1 - effective_state(DDU, {**state, "conv1.weight": torch.zeros_like(c1)})["conv1.weight"]
                                       ).reshape(c1.shape[0], -1))[0]) <= 0.9 + 1e-4
    assert float(c1[0, 0, 2]) > 0.1  # the identity at the centre tap is in the sampled (effective) weight
    with pytest.raises(ValueError, match="vi only"):
        DeepEnsemble(DDU, prior_sigma=0.5, n_train=100, members=2)
