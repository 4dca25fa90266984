"""benchmarks/noise.py: pure-noise stacks and the false-spot count of the default detector."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import noise  # noqa: E402

SHAPE = (10, 64, 64)


@pytest.mark.parametrize("key, mean", [("poisson3", 3.0), ("poisson10", 10.0), ("poisson100", 100.0),
                                       ("gauss100", 100.0), ("camera10", 110.0)])
def test_noise_models_have_the_requested_mean_and_shape_and_are_deterministic(key, mean):
    vol = noise.noise_volume(key, SHAPE, 0)
    assert vol.shape == SHAPE and vol.dtype == np.float32
    assert vol.mean() == pytest.approx(mean, rel=0.02)
    assert np.array_equal(vol, noise.noise_volume(key, SHAPE, 0))
    assert not np.array_equal(vol, noise.noise_volume(key, SHAPE, 1))
    assert not np.array_equal(vol, noise.noise_volume(key, SHAPE, 0, seed=1))
    grad = noise.noise_volume(key + "-grad", SHAPE, 0)
    assert grad.shape == SHAPE and grad.mean() == pytest.approx(mean, rel=0.05)  # symmetric gradient


def test_noise_spread_matches_each_model():
    assert noise.noise_volume("poisson10", SHAPE).var() == pytest.approx(10.0, rel=0.05)
    assert noise.noise_volume("gauss100", SHAPE).std() == pytest.approx(5.0, rel=0.05)
    assert noise.noise_volume("camera10", SHAPE).var() == pytest.approx(10.0 + 4.0, rel=0.05)
    assert np.all(noise.noise_volume("poisson3", SHAPE) == np.round(noise.noise_volume("poisson3", SHAPE)))


def test_gradient_spans_plus_minus_30_percent_along_a_random_direction():
    thetas = []
    for i in range(5):
        f = noise.illumination((64, 96), np.random.default_rng(i))
        assert f.min() == pytest.approx(0.7) and f.max() == pytest.approx(1.3)
        thetas.append((f[-1, 0] - f[0, 0], f[0, -1] - f[0, 0]))
    assert len({np.sign(t).tobytes() for t in thetas}) > 1  # the direction changes
    vol = noise.noise_volume("poisson100-grad", (40, 128, 128))
    profile = vol.mean(axis=0)  # Z-averaged: the gradient is constant along Z
    lo, hi = np.percentile(profile, [0.5, 99.5])
    assert 65 < lo < 78 and 122 < hi < 135


def test_arguments_select_subsets():
    args = noise.parse_args(["--quick", "--noise", "poisson10,gauss100-grad", "--model", "a=x.onnx",
                             "--model", "b=y.onnx"])
    assert args.noise == ["poisson10", "gauss100-grad"] and args.shapes == [(10, 64, 64)] and args.stacks == 2
    assert args.models == [("a", "x.onnx"), ("b", "y.onnx")]
    args = noise.parse_args(["--shapes", "10,128,128;10,512,512", "--stacks", "5"])
    assert args.shapes == [(10, 128, 128), (10, 512, 512)] and args.stacks == 5 and len(args.noise) == 10
    assert args.models == [("default", None)]
    with pytest.raises(SystemExit):
        noise.parse_args(["--noise", "poisson7"])


def test_cell_criterion():
    assert noise.cell_result([0, 0, 1], 10**6, 0.5)["pass"]  # 0.33 per 10^6 voxels
    assert not noise.cell_result([0, 0, 6], 10**7, 0.5)["pass"]  # 6 in one stack
    assert not noise.cell_result([1, 1], 10**5, 0.5)["pass"]  # 10 per 10^6 voxels


def test_quick_run_writes_counts_and_summary(tmp_path):
    out = tmp_path / "noise"
    assert noise.main(["--quick", "--stacks", "1", "--noise", "poisson10", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["criterion"] == {"max_spots_per_mvox": 1.0, "max_spots_per_stack": 5}
    (cell,) = report["cells"]
    assert cell["model"] == "default" and cell["noise"] == "poisson10" and cell["shape"] == [10, 64, 64]
    assert len(cell["counts"]) == 1 and all(isinstance(c, int) and c >= 0 for c in cell["counts"])
    assert cell["spots_per_mvox"] == pytest.approx(1e6 * sum(cell["counts"]) / (10 * 64 * 64))
    summary = report["summary"]["default"]
    assert summary["cells"] == 1 and summary["cells_passed"] == int(cell["pass"]) and report["seconds"] > 0
    assert {"cpu_count", "git_commit", "versions"} <= set(report["machine"])
    assert "Poisson 10" in out.with_suffix(".md").read_text()


def test_detector_counts_obvious_spots_on_noise():
    """Two bright particles in 41k voxels of noise are found. (One alone is not 3 sd out of the noise peaks that
    the calibration, which saw none above 0.9 in 58 M voxels, cannot rule out: the automatic threshold says that
    nothing stands out.)"""
    from dmdet_infer import Detector

    vol = noise.noise_volume("poisson10", (10, 64, 64), 3).astype(np.float64)
    z, y, x = np.mgrid[:10, :64, :64]
    for cy, cx in ((30, 33), (12, 50)):
        vol += 300.0 * np.exp(-((z - 5) ** 2 / (2 * 1.0**2) + ((y - cy) ** 2 + (x - cx) ** 2) / (2 * 1.5**2)))
    spots = Detector(None).detect(vol.astype(np.float32))
    assert len(spots) >= 2
    for cy, cx in ((30, 33), (12, 50)):
        d = np.hypot(spots.y - cy, spots.x - cx)
        assert d.min() < 1.5 and abs(spots.z[np.argmin(d)] - 5) < 1.5
