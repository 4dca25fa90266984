"""AWing (method.md §1 table, continuity, safe gradients), weight map, MSE and binary losses."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.losses import AWingLoss, BinaryLoss, WeightedMSELoss, awing, make_loss, weight_map  # noqa: E402

# method.md §1.1: y -> (L(0.1), L(theta=0.5), L(1.0)) at alpha 2.1, omega 14, eps 1, theta 0.5
TABLE = {
    0.0: (0.111, 2.935, 8.496),
    0.2: (0.175, 3.324, 8.945),
    0.5: (0.347, 3.991, 9.548),
    1.0: (1.070, 5.361, 10.259),
}


@pytest.mark.parametrize("y", sorted(TABLE))
def test_awing_known_values(y):
    for delta, expected in zip((0.1, 0.5, 1.0), TABLE[y]):
        # the prediction on either side of the target gives the same loss (|y - yhat|)
        for pred in {y + delta, y - delta}:
            got = float(awing(torch.tensor([pred], dtype=torch.float64), torch.tensor([y], dtype=torch.float64)))
            assert got == pytest.approx(expected, abs=1.5e-3), (y, delta, pred)


@pytest.mark.parametrize("y", [0.0, 0.2, 0.5, 1.0])
def test_awing_continuous_value_and_slope_at_theta(y):
    target = torch.tensor([y, y], dtype=torch.float64)
    eps = 1e-7
    pred = torch.tensor([y + 0.5 - eps, y + 0.5 + eps], dtype=torch.float64, requires_grad=True)
    loss = awing(pred, target)
    assert float((loss[1] - loss[0]).detach()) == pytest.approx(0.0, abs=1e-5)
    (g,) = torch.autograd.grad(loss.sum(), pred)
    assert float(g[1] - g[0]) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("y", [0.0, 0.5, 1.0])
def test_awing_gradient_finite_at_zero_error(y):
    pred = torch.full((4,), y, requires_grad=True)
    loss = AWingLoss()(pred.view(1, 1, 1, 2, 2), torch.full((1, 1, 1, 2, 2), y))
    (g,) = torch.autograd.grad(loss, pred)
    assert torch.isfinite(g).all()
    assert float(g.abs().max()) == 0.0
    assert float(loss.detach()) == 0.0


def test_awing_computes_in_fp32_and_clamps_targets():
    pred = torch.rand(1, 1, 2, 4, 4, dtype=torch.float16, requires_grad=True)
    target = torch.full((1, 1, 2, 4, 4), 1.2)  # > 1 would give infinite gradients unclamped
    loss = AWingLoss()(pred, target)
    assert loss.dtype == torch.float32
    (g,) = torch.autograd.grad(loss, pred)
    assert torch.isfinite(g.float()).all()


def test_weight_map_values():
    t = torch.zeros(1, 1, 5, 7, 7)
    t[0, 0, 2, 3, 3] = 0.5
    t[0, 0, 0, 0, 6] = 0.19  # below T: no weight
    w = weight_map(t, threshold=0.2, lam=10.0)
    assert set(torch.unique(w).tolist()) == {1.0, 11.0}
    expected = torch.ones_like(t)
    expected[0, 0, 1:4, 2:5, 2:5] = 11.0  # 3x3x3 dilation of the single voxel
    assert torch.equal(w, expected)
    # threshold is inclusive (Y_d >= T)
    assert float(weight_map(torch.full((1, 1, 1, 1, 1), 0.2))) == 11.0


def test_weighted_loss_is_mean_of_weighted_awing():
    torch.manual_seed(0)
    t = torch.zeros(1, 1, 3, 8, 8)
    t[0, 0, 1, 4, 4] = 1.0
    p = torch.rand_like(t)
    w = weight_map(t)
    assert float(AWingLoss()(p, t)) == pytest.approx(float((awing(p, t) * w).mean()), rel=1e-6)
    assert float(AWingLoss(weighted=False)(p, t)) == pytest.approx(float(awing(p, t).mean()), rel=1e-6)
    assert float(WeightedMSELoss()(p, t)) == pytest.approx(float(((p - t) ** 2 * w).mean()), rel=1e-6)


def test_binary_losses():
    t = torch.zeros(2, 1, 2, 8, 8)
    t[0, 0, 1, 3, 3] = 1.0
    perfect = t.clone()
    bad = 1.0 - t
    for mode in BinaryLoss.MODES:
        loss = BinaryLoss(mode)
        assert float(loss(perfect, t)) < 0.01
        assert float(loss(bad, t)) > 0.5
    # soft Dice is pooled over the batch: defined for an all-background batch
    empty = torch.zeros_like(t)
    assert float(BinaryLoss("dice")(torch.zeros_like(t), empty)) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        BinaryLoss("focal")


def test_make_loss_names():
    assert isinstance(make_loss("awing"), AWingLoss) and make_loss("awing").weighted
    assert not make_loss("awing_noweight").weighted
    assert isinstance(make_loss("mse"), WeightedMSELoss)
    assert isinstance(make_loss("binary"), BinaryLoss)
    with pytest.raises(ValueError):
        make_loss("l1")
    assert np.isfinite(float(make_loss("awing")(torch.rand(1, 1, 2, 4, 4), torch.rand(1, 1, 2, 4, 4))))
