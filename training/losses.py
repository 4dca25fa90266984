"""Losses (method.md §1): adaptive wing with the DM-DetNet3D weight map, weighted MSE, and a binary loss.

All losses take ``pred`` (sigmoid output in [0, 1]) and ``target`` of the same shape (B, C, Z, Y, X) and return
a scalar. They compute in fp32 whatever the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def weight_map(target: torch.Tensor, threshold: float = 0.2, lam: float = 10.0) -> torch.Tensor:
    """``lam + 1`` where the 3x3x3 grey dilation (max filter) of ``target`` is >= ``threshold``, else 1."""
    dilated = F.max_pool3d(target, kernel_size=3, stride=1, padding=1)
    return 1.0 + lam * (dilated >= threshold).to(target.dtype)


def awing(
    pred: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 2.1,
    omega: float = 14.0,
    epsilon: float = 1.0,
    theta: float = 0.5,
) -> torch.Tensor:
    """Element-wise adaptive wing loss (Wang et al. 2019); ``target`` is clamped to [0, 1].

    delta = |y - yhat|, p = alpha - y; delta < theta: omega * log1p((delta/eps)^p), else A*delta - C with A, C per
    voxel so that value and slope are continuous at theta. p >= alpha - 1 > 1 keeps the gradient at delta = 0
    finite (zero).
    """
    y = target.float().clamp(0.0, 1.0)
    delta = (y - pred.float()).abs()
    p = alpha - y
    t = theta / epsilon
    tp = torch.pow(t, p)
    a = omega * p * torch.pow(t, p - 1.0) / ((1.0 + tp) * epsilon)
    c = theta * a - omega * torch.log1p(tp)
    nonlinear = omega * torch.log1p(torch.pow(delta / epsilon, p))
    return torch.where(delta < theta, nonlinear, a * delta - c)


class AWingLoss(nn.Module):
    """Mean of AWing * W (W = ``lam`` + 1 near particles, see :func:`weight_map`; W = 1 if not ``weighted``)."""

    def __init__(
        self,
        weighted: bool = True,
        threshold: float = 0.2,
        lam: float = 10.0,
        alpha: float = 2.1,
        omega: float = 14.0,
        epsilon: float = 1.0,
        theta: float = 0.5,
    ) -> None:
        super().__init__()
        self.weighted = weighted
        self.threshold = threshold
        self.lam = lam
        self.params = dict(alpha=alpha, omega=omega, epsilon=epsilon, theta=theta)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = awing(pred, target, **self.params)
        if self.weighted:
            loss = loss * weight_map(target.float(), self.threshold, self.lam)
        return loss.mean()


class WeightedMSELoss(nn.Module):
    """Mean of (y - yhat)^2 * W with the same weight map as :class:`AWingLoss` (ablation)."""

    def __init__(self, weighted: bool = True, threshold: float = 0.2, lam: float = 10.0) -> None:
        super().__init__()
        self.weighted = weighted
        self.threshold = threshold
        self.lam = lam

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = (pred.float() - target.float()) ** 2
        if self.weighted:
            loss = loss * weight_map(target.float(), self.threshold, self.lam)
        return loss.mean()


class BinaryLoss(nn.Module):
    """Loss for single-voxel binary targets (the DetNet3D baseline).

    mode ``"dice"`` (default): soft Dice over the whole batch, 1 - (2 sum(p y) + s) / (sum p + sum y + s). It is
    what DetNet used, it is invariant to the ~1:5000 foreground/background ratio of single-voxel targets (no
    weight to tune), and pooling over the batch keeps it defined for crops without particles.
    mode ``"bce"``: binary cross-entropy with positives weighted by ``pos_weight``.
    mode ``"dice+bce"``: their sum (BCE gives a strong early gradient, Dice fixes the imbalance).
    """

    MODES = ("dice", "bce", "dice+bce")

    def __init__(self, mode: str = "dice", pos_weight: float = 100.0, smooth: float = 1.0) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"binary loss mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.pos_weight = pos_weight
        self.smooth = smooth

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = pred.float()
        y = target.float()
        total = p.new_zeros(())
        if "dice" in self.mode:
            inter = (p * y).sum()
            total = total + 1.0 - (2.0 * inter + self.smooth) / (p.sum() + y.sum() + self.smooth)
        if "bce" in self.mode:
            weight = 1.0 + (self.pos_weight - 1.0) * y
            total = total + F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), y, weight=weight)
        return total


def make_loss(name: str, threshold: float = 0.2, lam: float = 10.0, binary_mode: str = "dice") -> nn.Module:
    """Loss by config name: ``awing``, ``awing_noweight``, ``mse``, ``mse_noweight``, ``binary``."""
    if name == "awing":
        return AWingLoss(True, threshold, lam)
    if name == "awing_noweight":
        return AWingLoss(False, threshold, lam)
    if name == "mse":
        return WeightedMSELoss(True, threshold, lam)
    if name == "mse_noweight":
        return WeightedMSELoss(False, threshold, lam)
    if name == "binary":
        return BinaryLoss(binary_mode)
    raise ValueError(f"unknown loss {name!r} (awing, awing_noweight, mse, mse_noweight, binary)")
