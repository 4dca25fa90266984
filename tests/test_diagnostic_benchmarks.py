"""The diagnostic benchmarks (threshold_oracle.py, flip_average.py, runtime_parity.py) on tiny stacks."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def test_threshold_oracle_quick(tmp_path):
    from benchmarks.threshold_oracle import main

    out = tmp_path / "oracle"
    assert main(["--quick", "--n", "1", "--big", "0", "--home", "0", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert set(rows) == {"ptc_snr1", "ptc_snr2", "ptc_snr4", "ptc_snr7", "simfish_a", "simfish_b",
                         "tissue_moderate", "tissue_faint", "yeast8bit"}
    for r in rows.values():
        a = r["auto"]
        assert a["tp"] + a["fn"] == r["particles"]
        assert r["oracle"]["f1"] >= r["oracle_score"]["f1"] - 1e-12  # the score-only cuts are among its cuts
        assert 0.0 <= a["f1"] <= 1.0
    assert rows["ptc_snr7"]["oracle"]["f1"] > 0.5  # bright spots are found
    assert "| ptc_snr7 |" in out.with_suffix(".md").read_text()


def test_threshold_oracle_conditions(tmp_path, capsys):
    import pytest

    from benchmarks.threshold_oracle import main

    out = tmp_path / "oracle"
    assert main(["--quick", "--n", "1", "--big", "0", "--home", "0", "--conditions", "ptc_snr7,tissue_faint",
                 "--out", str(out)]) == 0
    assert set(json.loads(out.with_suffix(".json").read_text())["rows"]) == {"ptc_snr7", "tissue_faint"}
    with pytest.raises(SystemExit):
        main(["--quick", "--conditions", "ptc_snr9", "--out", str(out)])
    assert "unknown condition(s) ptc_snr9" in capsys.readouterr().err


def test_flip_average_quick(tmp_path):
    import numpy as np

    from benchmarks.flip_average import averaged, main
    from dmdet_infer import Detector

    det = Detector()
    vol = np.random.default_rng(0).poisson(10.0, (8, 32, 32)).astype(np.uint16)
    assert np.array_equal(averaged(det, vol, ((),)), det.density(vol))
    two = averaged(det, vol, ((), (1, 2)))
    assert np.allclose(two, (det.density(vol) + det.density(vol[:, ::-1, ::-1].copy())[:, ::-1, ::-1]) / 2,
                       atol=1e-6)
    out = tmp_path / "flips"
    assert main(["--quick", "--n", "1", "--conditions", "ptc_snr7", "--variants", "plain,xy2",
                 "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]["ptc_snr7"]
    assert set(rows) == {"plain", "xy2"} and rows["plain"]["f1"] > 0.5


def test_runtime_parity_quick(tmp_path):
    import pytest

    pytest.importorskip("openvino")
    from benchmarks.runtime_parity import main

    out = tmp_path / "parity"
    assert main(["--quick", "--n", "1", "--home", "1", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert {"ptc_snr7", "yeast8bit", "home SNR 4"} <= set(rows)
    for r in rows.values():
        assert r["same"] == r["stacks"] and r["spots"][0] == r["spots"][1]  # the same spots on both runtimes
        assert r["f1"]["onnxruntime"] == r["f1"]["openvino"]
    assert rows["ptc_snr7"]["spots"][0] > 0 and rows["ptc_snr7"]["f1"]["openvino"] > 0.5


def test_ptc_nuisances_quick(tmp_path):
    from benchmarks.ptc_nuisances import VARIANTS, main

    out = tmp_path / "nuisances"
    assert main(["--snrs", "7", "--n", "1", "--shape", "8,64,64", "--particles", "6", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert set(rows) == {f"SNR 7, {name}" for name in VARIANTS}
    for r in rows.values():
        assert r["particles"] == rows["SNR 7, as simulated"]["particles"]  # the same draws in every variant
        assert r["oracle"]["f1"] > 0.5  # bright spots are found
    assert "| SNR 7, no read noise |" in out.with_suffix(".md").read_text()


def test_runtime_parity_compares_spot_sets_not_the_order_of_equal_scores():
    """Two runtimes may order spots whose scores tie within their rounding either way: the same spots."""
    from types import SimpleNamespace

    import numpy as np

    from benchmarks.runtime_parity import compare

    zyx = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    a = SimpleNamespace(zyx=zyx, score=np.array([0.9, 0.9, 0.8]))
    b = SimpleNamespace(zyx=zyx[[1, 0, 2]] + 1e-6, score=np.array([0.9, 0.9, 0.8]) + 1e-7)
    c = compare(a, b)
    assert c["same"] and not c["same_order"] and c["max_coord_diff"] < 1e-5 and c["max_score_diff"] < 1e-6
    moved = SimpleNamespace(zyx=zyx + np.array([0.0, 0.0, 0.01]), score=a.score)
    assert not compare(a, moved)["same"] and compare(a, a)["same_order"]
    # another arithmetic (bf16): one spot moved by 0.3 voxel, one more spot; the diffs are those of matched pairs
    other = SimpleNamespace(zyx=np.vstack([zyx + np.array([[0, 0, 0], [0, 0.3, 0], [0, 0, 0]]), [[20.0, 20, 20]]]),
                            score=np.array([0.9, 0.88, 0.8, 0.6]))
    c = compare(a, other)
    assert not c["same"] and c["spots"] == [3, 4] and c["matched"] == 3
    assert abs(c["max_coord_diff"] - 0.3) < 1e-9 and abs(c["max_score_diff"] - 0.02) < 1e-9
