"""The model shipped in the wheel: metadata complete, and it finds the example stack's particles."""

from pathlib import Path

import numpy as np
from click.testing import CliRunner
from onnx_models import gaussian_spots, score_spots

from dmdet_infer.cli import main
from dmdet_infer.model import Model, default_model_path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_default_model_metadata():
    path = default_model_path()
    assert path.stat().st_size < 5_000_000
    info = Model(device="cpu").info
    assert info.kind == "density"
    assert info.stride_zyx == (1, 4, 4)
    assert min(info.halo_zyx) > 0
    assert 0.05 <= info.threshold <= 0.95
    assert info.validation_scores["f1_mean"] > 0.5
    assert info.config["width"] > 0 and info.training_data


def test_cli_on_the_example_stack(tmp_path):
    out = tmp_path / "spots.csv"
    result = CliRunner().invoke(main, [str(EXAMPLES / "virus_snr4.tif"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"-> {out}" in result.stdout
    found = np.loadtxt(out, delimiter=",", skiprows=1, ndmin=2)[:, :3]
    truth = np.loadtxt(EXAMPLES / "virus_snr4_truth.csv", delimiter=",", skiprows=1)
    s = score_spots(found, truth)
    assert s["f1"] >= 0.95, s
    assert s["rmse"] < 0.5, s  # sub-voxel: below the 0.5-voxel floor of integer maxima


def test_shipped_model_normalises_locally_and_says_its_spot_size():
    info = Model(device="cpu").info
    assert info.normalisation["method"] == "local_median_mad"
    assert info.spot_sigma_zyx is not None and info.spot_sigma_range_zyx is not None
    noise = info.noise_peaks
    assert noise is not None and "stand_out_sd" in noise and len(noise["noise"]) >= 10  # the noise family


def test_cli_line_reports_the_threshold_and_when_nothing_stands_out(tmp_path):
    import tifffile

    noise = tmp_path / "noise.tif"
    rng = np.random.default_rng(7)
    mean = 10.0 * (1 + 0.3 * np.linspace(-1, 1, 128))[None, None, :]  # Poisson under a +-30 % gradient
    tifffile.imwrite(noise, rng.poisson(np.broadcast_to(mean, (10, 128, 128))).astype(np.uint16))
    out = tmp_path / "noise.csv"
    result = CliRunner().invoke(main, [str(noise), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "0 spots" in result.stdout and "nothing stands out of the noise" in result.stdout
    assert out.read_text().splitlines() == ["z,y,x,score,intensity,mass,spread,split"]
    result = CliRunner().invoke(main, [str(EXAMPLES / "virus_snr4.tif"), "-o", str(tmp_path / "s.csv")])
    assert "(auto)" in result.stdout and "threshold 0." in result.stdout and "spot sigma" in result.stdout


def test_very_bright_spots_give_one_spot_each():
    """Issue 16 item 11: 12 particles of amplitude 2000 on a background of 10 gave 22-132 spots; stage 5 trained
    on very bright spots (SNR up to 300) finds each once."""
    from dmdet_infer.detector import Detector

    rng = np.random.default_rng(1)
    truth = np.c_[rng.uniform(2, 8, 12), rng.uniform(10, 118, 12), rng.uniform(10, 118, 12)]
    detector = Detector()
    for amplitude in (2000.0, 20000.0):
        volume = rng.poisson(10 + gaussian_spots((10, 128, 128), truth, (1.0, 1.5, 1.5), amplitude)).astype(np.uint16)
        spots = detector.detect(volume)
        s = score_spots(np.c_[spots.z, spots.y, spots.x], truth, 5.0)
        assert s["tp"] == 12 and s["fp"] <= 1, (amplitude, s)


def test_both_runtimes_find_the_same_spots_on_the_example_stack(tmp_path):
    """OpenVINO (the CPU default when installed) in fp32 and ONNX Runtime: the same CSV to rounding, the runtime
    and precision reported."""
    import pytest

    pytest.importorskip("openvino")
    import tifffile

    from dmdet_infer import Detector

    volume = tifffile.imread(EXAMPLES / "virus_snr4.tif")
    a = Detector(device="cpu", precision="fp32").detect(volume)
    b = Detector(device="cpu", runtime="onnxruntime").detect(volume)
    assert (a.meta["runtime"], b.meta["runtime"]) == ("openvino", "onnxruntime")
    assert a.meta["precision"] == b.meta["precision"] == "fp32"
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.zyx, b.zyx, atol=1e-4)
    np.testing.assert_allclose(a.score, b.score, atol=1e-4)
    out = tmp_path / "spots.csv"
    result = CliRunner().invoke(main, [str(EXAMPLES / "virus_snr4.tif"), "-o", str(out), "--runtime", "onnxruntime"])
    assert result.exit_code == 0, result.output
    assert len(np.loadtxt(out, delimiter=",", skiprows=1, ndmin=2)) == len(b)
