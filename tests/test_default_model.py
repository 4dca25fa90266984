"""The model shipped in the wheel: metadata complete, and it finds the example stack's particles."""

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from dmdet_infer.cli import main
from dmdet_infer.model import Model, default_model_path
from training.matching import score

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
    s = score(found, truth)
    assert s["f1"] >= 0.95, s
    assert s["rmse"] < 0.5, s  # sub-voxel: below the 0.5-voxel floor of integer maxima
