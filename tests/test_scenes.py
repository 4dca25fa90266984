"""Data options of the microscopy-like training generator (training.scenes; DataSpec.ptc_share and others)."""

import dataclasses

import numpy as np

from training.config import DataSpec
from training.data import _cache_path, simulate_item
from training.scenes import BRIGHT_SNR_RANGE, sample_scene


def test_bright_share_draws_bright_spots_and_none_when_zero():
    rng = np.random.default_rng(0)
    bright = [sample_scene(rng, (8, 32, 32), bright=1.0).snr for _ in range(20)]
    assert all(BRIGHT_SNR_RANGE[0] <= s <= BRIGHT_SNR_RANGE[1] for s in bright)
    rng = np.random.default_rng(0)
    plain = [sample_scene(rng, (8, 32, 32)).snr for _ in range(200)]
    assert max(plain) <= 12.0


def test_default_options_leave_older_pools_unchanged():
    """bright_share 0 and ptc_share 0.25 draw exactly as before, and the cache key stays the same."""
    spec = DataSpec(n_stacks=4, shape=(8, 32, 32), generator="mix", seed=3, cache_dir="/tmp/x")
    assert _cache_path(spec, 0) == _cache_path(dataclasses.replace(spec, bright_share=0.0), 0)
    assert _cache_path(spec, 0) != _cache_path(dataclasses.replace(spec, bright_share=0.1), 0)
    assert _cache_path(spec, 0) != _cache_path(dataclasses.replace(spec, ptc_share=0.5), 0)


def test_ptc_share_chooses_the_generator():
    spec = DataSpec(n_stacks=40, shape=(8, 32, 32), generator="mix", seed=1)
    only_ptc = [simulate_item(dataclasses.replace(spec, ptc_share=1.0), i)[2] for i in range(6)]
    no_ptc = [simulate_item(dataclasses.replace(spec, ptc_share=0.0), i)[2] for i in range(6)]
    assert all(m.get("generator") != "microscopy" for m in only_ptc)
    assert all(m.get("generator") == "microscopy" for m in no_ptc)


def test_texture_min_raises_only_the_texture_scale_and_keys_its_own_pool():
    """texture_min holds every textured scene's scale at or above that multiple of its spot σxy; the other draws
    (and so every scene without texture, or with a coarser one) stay as they were; the pool gets its own key."""
    before = [sample_scene(np.random.default_rng(i), (8, 32, 32)) for i in range(60)]
    after = [sample_scene(np.random.default_rng(i), (8, 32, 32), texture_min=2.2) for i in range(60)]
    textured = [(b, a) for b, a in zip(before, after) if b.texture]
    assert textured and any(b.texture_scale < 2.2 * b.sigma_xy for b, _ in textured)  # the rule has work to do
    for b, a in zip(before, after):
        assert a.texture_scale == (max(b.texture_scale, 2.2 * b.sigma_xy) if b.texture else b.texture_scale)
        assert dataclasses.replace(a, texture_scale=b.texture_scale) == b
    spec = DataSpec(n_stacks=4, shape=(8, 32, 32), generator="mix", seed=3, cache_dir="/tmp/x")
    assert _cache_path(spec, 0) == _cache_path(dataclasses.replace(spec, texture_min=0.0), 0)
    assert _cache_path(spec, 0) != _cache_path(dataclasses.replace(spec, texture_min=2.2), 0)
