"""The distributed runner on a LocalCluster of 2 worker processes gives the single-process spots."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from onnx_models import render_spots

distributed = pytest.importorskip("dask.distributed")

from dmdet_infer import Detector, DetectorConfig  # noqa: E402
from dmdet_infer.cli import main  # noqa: E402
from dmdet_infer.distributed import _CACHE, DetectorSpec, detect_many  # noqa: E402
from dmdet_infer.errors import InputError  # noqa: E402
from dmdet_infer.io import read_stack  # noqa: E402

TILE = (3, 16, 16)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            distributed.Client(c) as cl:
        yield cl


def _volume(seed, shape=(8, 60, 70), n=30):
    rng = np.random.default_rng(seed)
    truth = np.column_stack([rng.uniform(0, shape[0] - 1, n), rng.uniform(0, shape[1] - 1, n),
                             rng.uniform(0, shape[2] - 1, n)])
    truth[:6, 1] = [15.5, 16.0, 16.5, 31.0, 32.0, 47.5]  # on and next to seams
    return render_spots(shape, truth, seed=seed)


def _same(a, b):
    assert len(a) == len(b) > 10
    np.testing.assert_allclose(a.zyx, b.zyx, atol=1e-9)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.intensity, b.intensity)


def _count_detectors():
    from dmdet_infer.detector import Detector

    return sum(isinstance(v, Detector) for v in _CACHE.values())


def test_tiles_of_one_volume_and_files_match_single_process(client, pooled_model_path, tmp_path):
    spec = DetectorConfig(str(pooled_model_path), device="cpu", tile=TILE, min_distance=(1, 2, 2))
    single = Detector(config=spec)  # the same config object, sent to the workers as it is
    volume = _volume(0)
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, _volume(1).astype(np.uint16), imagej=True, resolution=(10.0, 10.0),
                     metadata={"spacing": 0.3, "unit": "um", "axes": "ZYX"})
    movie = tmp_path / "m.tif"
    tifffile.imwrite(movie, np.stack([_volume(s) for s in (2, 3, 4)]).astype(np.uint16), imagej=True,
                     metadata={"axes": "TZYX"})
    arr, tif, mov = detect_many(client, [volume, path, movie], spec)
    assert len(single.cores(volume.shape)) > 10
    _same(arr, single.detect(volume))
    _same(tif, single.detect_stack(read_stack(path)))
    assert tif.voxel_size_um == pytest.approx((0.3, 0.1, 0.1))
    expect = single.detect_stack(read_stack(movie))
    _same(mov, expect)
    np.testing.assert_array_equal(mov.frame, expect.frame)
    counts = client.run(_count_detectors)
    assert set(counts.values()) <= {0, 1} and sum(counts.values()) >= 1  # one session per worker process


def test_zarr_input_is_read_by_the_workers(client, pooled_model_path, tmp_path):
    zarr = pytest.importorskip("zarr")
    volume = _volume(5).astype(np.uint16)
    arr = zarr.open_array(str(tmp_path / "v.zarr"), mode="w", shape=volume.shape, dtype="uint16", chunks=(4, 32, 32))
    arr[...] = volume
    (spots,) = detect_many(client, [tmp_path / "v.zarr"], DetectorSpec(str(pooled_model_path), tile=TILE))
    _same(spots, Detector(pooled_model_path, device="cpu", tile=TILE).detect(volume))


def test_bad_input_is_reported_in_its_place(client, pooled_model_path, tmp_path):
    bad = np.ones((4, 16, 16), np.float32)
    bad[1, 2, 3] = np.nan
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, bad, photometric="minisblack")
    good = _volume(6)
    err, missing, ok = detect_many(client, [path, tmp_path / "none.tif", good],
                                   DetectorSpec(str(pooled_model_path)))
    assert isinstance(err, InputError) and "nan.tif" in str(err) and "NaN" in str(err)
    assert isinstance(missing, InputError) and "none.tif" in str(missing)
    _same(ok, Detector(pooled_model_path, device="cpu").detect(good))


def test_cli_scheduler_writes_one_csv(client, pooled_model_path, tmp_path):
    movie = tmp_path / "m.tif"
    tifffile.imwrite(movie, np.stack([_volume(s) for s in (7, 8)]).astype(np.uint16), imagej=True,
                     metadata={"axes": "TZYX"})
    out = tmp_path / "m.csv"
    result = CliRunner().invoke(main, [str(movie), "-o", str(out), "--model", str(pooled_model_path), "--tile",
                                       "3,16,16", "--scheduler", client.scheduler.address])
    assert result.exit_code == 0, result.output
    single = tmp_path / "s.csv"
    result = CliRunner().invoke(main, [str(movie), "-o", str(single), "--model", str(pooled_model_path), "-q"])
    assert result.exit_code == 0, result.output
    assert out.read_text() == single.read_text()
    assert out.read_text().splitlines()[0].startswith("frame,")


def test_detector_spec_is_the_config_on_the_cpu(pooled_model_path):
    """The name of before the config: the same fields in the same order, device "cpu" by default."""
    spec = DetectorSpec(str(pooled_model_path), "cpu", 0.3, (1, 2, 2), "lsq", TILE, 1, None, True, False)
    assert isinstance(spec, DetectorConfig) and DetectorSpec().device == "cpu" and DetectorConfig().device == "auto"
    assert spec.to_dict() == {**DetectorConfig().to_dict(), "model": str(pooled_model_path), "device": "cpu",
                              "threshold": 0.3, "min_distance": [1.0, 2.0, 2.0], "tile": list(TILE), "threads": 1,
                              "mass_cut": False}
    assert hash(spec) == hash(DetectorSpec(**spec.to_dict()))
    assert spec.build().fixed_threshold == 0.3
