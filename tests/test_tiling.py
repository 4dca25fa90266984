import numpy as np
import pytest

from dmdet_infer import tiling
from dmdet_infer.model import Model
from dmdet_infer.normalise import apply, stats


@pytest.mark.parametrize("shape,tile,halo,stride", [
    ((10, 64, 64), (10, 16, 24), (1, 4, 4), (1, 2, 2)),
    ((7, 45, 37), (3, 8, 8), (2, 6, 3), (1, 4, 4)),
    ((1, 5, 9), (4, 4, 4), (0, 0, 0), (1, 1, 1)),
])
def test_cores_cover_the_volume_once_and_reads_align_to_the_stride(shape, tile, halo, stride):
    count = np.zeros(shape, int)
    padded = [-(-s // st) * st for s, st in zip(shape, stride)]
    for t in tiling.plan(shape, tile, halo, stride):
        count[t.core] += 1
        for read, core, h, st, n in zip(t.read, t.core, halo, stride, padded):
            assert read.start % st == 0 and (read.stop - read.start) % st == 0
            assert 0 <= read.start and read.stop <= n
            assert read.start <= max(0, core.start - h) and read.stop >= min(n, core.stop + h)
    assert (count == 1).all()


def _reads(shape, tile, halo, stride):
    tiles = tiling.plan(shape, tile, halo, stride)
    sizes = [int(np.prod([s.stop - s.start for s in t.read])) for t in tiles]
    return max(sizes), sum(sizes)


def test_auto_tile_whole_for_small_and_bounded_for_large():
    budget = 12 * 512 * 512
    assert tiling.auto_tile((10, 512, 512), (15, 32, 32), (1, 4, 4), budget) == (10, 512, 512)
    tile = tiling.auto_tile((200, 4096, 4096), (15, 32, 32), (1, 4, 4), budget)
    assert _reads((200, 4096, 4096), tile, (15, 32, 32), (1, 4, 4))[0] <= budget
    assert tile[1] % 4 == 0 and tile[2] % 4 == 0


@pytest.mark.parametrize("shape,budget", [((100, 4096, 4096), 9_000_000), ((40, 2048, 2048), 9_000_000),
                                          ((1000, 512, 512), 9_000_000), ((10, 2048, 2048), 2_000_000)])
def test_auto_tile_fits_the_budget_and_reads_less_than_simple_rules(shape, budget):
    halo, stride = (15, 36, 36), (1, 4, 4)
    tile = tiling.auto_tile(shape, halo, stride, budget)
    biggest, total = _reads(shape, tile, halo, stride)
    assert biggest <= budget
    # no candidate a person would try (whole z or 32-slice cores, the largest square that fits) reads less
    for tz in {min(shape[0], 32), shape[0]}:
        zin = min(shape[0], tz + 2 * halo[0])
        side = (int(np.sqrt(budget / zin)) - 2 * halo[1]) // 4 * 4
        if side >= 16:
            simple = (tz, side, side)
            if _reads(shape, simple, halo, stride)[0] <= budget:
                assert total <= _reads(shape, simple, halo, stride)[1]
    # cores are balanced: the last one along y/x is not a sliver
    cores = [t.core for t in tiling.plan(shape, tile, halo, stride)]
    widths = {c[2].stop - c[2].start for c in cores}
    assert min(widths) >= 0.75 * max(widths)


@pytest.mark.parametrize("shape,tile", [((6, 45, 37), (2, 8, 12)), ((10, 64, 64), (10, 32, 32)),
                                        ((3, 30, 30), (5, 7, 9))])
def test_tiled_prediction_equals_whole_volume(pooled_model_path, shape, tile):
    model = Model(pooled_model_path, device="cpu")
    volume = np.random.default_rng(3).poisson(10.0, shape).astype(np.float32)
    prep = stats(volume, {"method": "local_median_mad", "block": [4, 16, 16]}).apply  # local: tiles must agree

    info = model.info
    whole = tiling.predict(volume, model.run, prep, shape, info.halo_zyx, info.stride_zyx)
    tiled = tiling.predict(volume, model.run, prep, tile, info.halo_zyx, info.stride_zyx)
    assert whole.shape == volume.shape
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_halo_too_small_is_visible(pooled_model_path):
    """Guards the test above: without halo the seams differ, so equality is not trivially true."""
    model = Model(pooled_model_path, device="cpu")
    volume = np.random.default_rng(4).poisson(10.0, (4, 32, 32)).astype(np.float32)

    def prep(b, region):
        return apply(b, 10.0, 3.0)

    whole = tiling.predict(volume, model.run, prep, (4, 32, 32), (0, 0, 0), (1, 2, 2))
    tiled = tiling.predict(volume, model.run, prep, (4, 8, 8), (0, 0, 0), (1, 2, 2))
    assert np.abs(tiled - whole).max() > 1e-3
