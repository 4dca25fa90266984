"""Density / binary targets and the loss weight map."""

from __future__ import annotations

import numpy as np
import pytest

from training.targets import binary_target, density_target, weight_map


def test_density_peak_one_and_widths() -> None:
    shape = (10, 40, 40)
    t = density_target(shape, np.array([[5.0, 20.0, 17.0]]), sigma_zyx=(1.2, 1.7, 2.1))
    assert t.dtype == np.float32 and t.shape == shape
    assert t.max() == pytest.approx(1.0) and t[5, 20, 17] == pytest.approx(1.0) and t.min() == 0.0
    lines = (t[:, 20, 17], t[5, :, 17], t[5, 20, :])
    for line, centre, sigma in zip(lines, (5, 20, 17), (1.2, 1.7, 2.1)):
        for d in (1, 2):
            est = np.sqrt(d * d / (-2 * np.log(line[centre + d])))
            assert est == pytest.approx(sigma, rel=1e-4)


def test_density_subvoxel_and_max_combination() -> None:
    t = density_target((6, 30, 30), np.array([[2.0, 10.3, 10.0]]))
    assert t[2, 10, 10] == pytest.approx(np.exp(-(0.3**2) / (2 * 1.5**2)), rel=1e-5)
    assert t[2, 10, 10] < 1.0
    close = np.array([[2.0, 10.0, 10.0], [2.0, 11.0, 10.0], [2.0, 10.0, 11.0]])
    t = density_target((6, 30, 30), close)
    assert t.max() <= 1.0 and t[2, 10, 10] == pytest.approx(1.0) and t[2, 11, 10] == pytest.approx(1.0)
    # The max-combination equals the voxel-wise max of single-particle maps.
    singles = np.max([density_target((6, 30, 30), p[None]) for p in close], axis=0)
    np.testing.assert_allclose(t, singles)


def test_density_empty_and_edges() -> None:
    assert not density_target((4, 8, 8), np.zeros((0, 3))).any()
    t = density_target((4, 8, 8), np.array([[0.0, 0.0, 7.0], [3.0, 7.0, 0.0]]))
    assert t[0, 0, 7] == pytest.approx(1.0) and t[3, 7, 0] == pytest.approx(1.0)


def test_binary_target_rounding_and_clipping() -> None:
    pos = np.array([[2.4, 3.6, 4.5], [-0.7, 0.2, 7.4], [9.6, 31.9, -3.0], [2.4, 3.6, 4.5]])
    t = binary_target((10, 32, 8), pos)
    assert t.dtype == np.float32 and t.sum() == 3
    assert t[2, 4, 5] == 1 and t[0, 0, 7] == 1 and t[9, 31, 0] == 1
    assert not binary_target((3, 3, 3), []).any()


def test_weight_map_values_and_extent() -> None:
    t = density_target((10, 40, 40), np.array([[5.0, 20.0, 20.0]]))
    w = weight_map(t)
    assert w.dtype == np.float32 and set(np.unique(w)) == {1.0, 11.0}
    assert w[5, 20, 20] == 11 and w[0, 0, 0] == 1
    # Target >= 0.2 out to |dx| = 2 (exp(-4/4.5) = 0.41, exp(-9/4.5) = 0.135); the 3x3x3 dilation adds one voxel.
    assert w[5, 20, 23] == 11 and w[5, 20, 24] == 1
    assert w[7, 20, 20] == 11 and w[8, 20, 20] == 1  # z: exp(-2/2)=0.37 at dz=1, 0.135 at dz=2 -> dilated to 2
    # Threshold is inclusive, and the window size is respected.
    x = np.zeros((1, 1, 9), np.float32)
    x[0, 0, 4] = 0.2
    assert weight_map(x, size=(1, 1, 3))[0, 0].tolist() == [1, 1, 1, 11, 11, 11, 1, 1, 1]
    assert weight_map(x, lam=4.0, size=(1, 1, 5))[0, 0].tolist() == [1, 1, 5, 5, 5, 5, 5, 1, 1]
