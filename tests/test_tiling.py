import numpy as np
import pytest

from dmdet_infer import tiling
from dmdet_infer.model import Model
from dmdet_infer.normalise import apply, normalisation_stats


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


def test_auto_tile_whole_for_small_and_bounded_for_large():
    assert tiling.auto_tile((10, 512, 512), (15, 32, 32), (1, 4, 4)) == (10, 512, 512)
    tile = tiling.auto_tile((200, 4096, 4096), (15, 32, 32), (1, 4, 4))
    zin, yin, xin = tile[0] + 30, tile[1] + 64, tile[2] + 64
    assert zin * yin * xin <= 1.5 * tiling.DEFAULT_MAX_VOXELS
    assert tile[1] % 4 == 0 and tile[2] % 4 == 0


@pytest.mark.parametrize("shape,tile", [((6, 45, 37), (2, 8, 12)), ((10, 64, 64), (10, 32, 32)),
                                        ((3, 30, 30), (5, 7, 9))])
def test_tiled_prediction_equals_whole_volume(pooled_model_path, shape, tile):
    model = Model(pooled_model_path, device="cpu")
    volume = np.random.default_rng(3).poisson(10.0, shape).astype(np.float32)
    offset, scale = normalisation_stats(volume, model.info.normalisation)

    def prep(b):
        return apply(b, offset, scale)

    info = model.info
    whole = tiling.predict(volume, model.run, prep, shape, info.halo_zyx, info.stride_zyx)
    tiled = tiling.predict(volume, model.run, prep, tile, info.halo_zyx, info.stride_zyx)
    assert whole.shape == volume.shape
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_halo_too_small_is_visible(pooled_model_path):
    """Guards the test above: without halo the seams differ, so equality is not trivially true."""
    model = Model(pooled_model_path, device="cpu")
    volume = np.random.default_rng(4).poisson(10.0, (4, 32, 32)).astype(np.float32)

    def prep(b):
        return apply(b, 10.0, 3.0)

    whole = tiling.predict(volume, model.run, prep, (4, 32, 32), (0, 0, 0), (1, 2, 2))
    tiled = tiling.predict(volume, model.run, prep, (4, 8, 8), (0, 0, 0), (1, 2, 2))
    assert np.abs(tiled - whole).max() > 1e-3
