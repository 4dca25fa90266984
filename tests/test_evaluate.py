"""training.evaluate and benchmarks/table1.py on tiny simulated volumes with the smoothing ONNX model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from dmdet_infer.peaks import find_peaks
from training import evaluate as ev
from training.matching import score
from training.sef3d import tune_sef3d
from training.simulate import SimParams, simulate

SHAPE = (6, 48, 48)
ROOT = Path(__file__).resolve().parents[1]


def _map(seed: int = 0) -> np.ndarray:
    """A smooth random map in [0, 1) with many maxima close together, and one plateau."""
    rng = np.random.default_rng(seed)
    m = gaussian_filter(rng.random((8, 40, 40)), (0.7, 1.0, 1.0))
    m = (m - m.min()) / (m.max() - m.min()) * 0.98
    m[4, 20:22, 20:23] = 0.99  # plateau: one peak
    return m.astype(np.float32)


@pytest.mark.parametrize("min_distance", [(1.0, 1.0, 1.0), (2.0, 4.0, 4.0)])
def test_filtering_peaks_by_score_equals_rerunning_find_peaks(min_distance):
    m = _map()
    low = find_peaks(m, 0.01, min_distance, "gaussian")
    assert len(low.scores) > 50
    for t in np.linspace(0.05, 0.95, 19):
        keep = low.scores.astype(np.float64) > t
        direct = find_peaks(m, float(t), min_distance, "gaussian")
        np.testing.assert_array_equal(low.voxels[keep], direct.voxels)
        np.testing.assert_array_equal(low.coords[keep], direct.coords)
        np.testing.assert_array_equal(low.scores[keep], direct.scores)


def test_tune_threshold_curve_equals_per_threshold_detection():
    maps = [_map(s) for s in range(3)]
    rng = np.random.default_rng(5)
    truths = [find_peaks(m, 0.6, (2, 4, 4)).coords + rng.normal(0, 0.3, (1, 3)) for m in maps]
    grid = [0.3, 0.45, 0.6, 0.75]
    best, f1, curve = ev.tune_threshold(maps, truths, grid, (2.0, 4.0, 4.0))
    for t, f in curve:
        expect = np.mean([score(find_peaks(m, t, (2, 4, 4)).coords, tr)["f1"] for m, tr in zip(maps, truths)])
        assert f == pytest.approx(expect, abs=1e-12)
    assert [t for t, _ in curve] == grid
    assert f1 == max(f for _, f in curve) and dict(curve)[best] == f1
    assert best == pytest.approx(0.6)  # the truths are the peaks above 0.6


def test_tune_threshold_default_grid_is_coarse_then_fine():
    maps = [_map(s) for s in range(2)]
    truths = [find_peaks(m, 0.63, (1, 1, 1)).coords for m in maps]
    best, f1, curve = ev.tune_threshold(maps, truths)
    ts = [t for t, _ in curve]
    assert set(ev.COARSE_THRESHOLDS) <= set(ts) and ts == sorted(ts)
    assert any(abs(t * 100 - round(t * 100)) < 1e-9 and round(t * 100) % 5 for t in ts)  # fine 0.01 steps
    assert 0.6 <= best <= 0.66 and f1 == pytest.approx(1.0)


def _items(snr: float, n: int, seed: int = 3, count: int = 3000) -> list:
    return [ev.split_item(seed, ev.SPLIT_TEST, i, n, (snr,), {"many": count}, shape=SHAPE) for i in range(n)]


def test_evaluate_model_easy_data(pooled_model_path):
    items = _items(7.0, 2)
    assert all(len(p) >= 10 for _, p, _ in items)
    res = ev.evaluate_model(str(pooled_model_path), items)
    assert len(res) == 2
    for r, (_, pos, _) in zip(res, items):
        assert r["snr"] == 7.0 and r["density"] == "many" and r["n_true"] == len(pos)
        assert r["tp"] + r["fn"] == r["n_true"] and r["seconds"] > 0
        assert r["f1"] > 0.9 and r["rmse"] < 1.0


def test_sef3d_tuner_matches_tune_sef3d_and_evaluates():
    items = _items(4.0, 3, count=2000)
    sigmas, ks = [(1.0, 1.5, 1.5), (0.75, 1.0, 1.0)], [1.0, 2.0, 3.0, 4.0, 6.0]
    params, f1 = ev.tune_sef3d_items(items, sigmas, ks)
    ref, ref_f1 = tune_sef3d([v for v, _, _ in items], [p for _, p, _ in items], sigmas, ks)
    assert params["sigma_zyx"] == ref["sigma_zyx"] and params["k"] == ref["k"]
    assert f1 == pytest.approx(ref_f1)
    res = ev.evaluate_sef3d(items, params)
    assert np.mean([r["f1"] for r in res]) > 0.8
    assert all(r["rmse"] < 1.5 for r in res)


def test_splits_are_deterministic_and_disjoint_from_training_streams():
    v1, p1, m1 = ev.split_item(7, ev.SPLIT_VALIDATION, 0, 1, shape=SHAPE)
    v2, p2, _ = ev.split_item(7, ev.SPLIT_VALIDATION, 0, 1, shape=SHAPE)
    np.testing.assert_array_equal(v1, v2)
    _, p_test, _ = ev.split_item(7, ev.SPLIT_TEST, 0, 1, shape=SHAPE)
    params = SimParams(**{**m1["params"], "shape": SHAPE})
    # training item i uses SeedSequence([seed, i]); [7, 1] == [7, 1, 0] would collide without the +1
    _, p_train = simulate(params, np.random.default_rng(np.random.SeedSequence([7, ev.SPLIT_VALIDATION])))
    assert len(p1) == len(p_train) and not np.allclose(p1, p_train)
    assert not np.allclose(p1, p_test)
    assert m1["snr"] == 1.0 and m1["density"] == "low"


def _fake(snr: float, f1s, rmses) -> list[dict]:
    return [{"snr": snr, "f1": f, "rmse": r, "precision": 1.0, "recall": f} for f, r in zip(f1s, rmses)]


def test_table_has_our_rows_paper_columns_and_crlb():
    res = {"mine": _fake(1.0, [0.5, 0.7], [1.0, 1.2]) + _fake(7.0, [1.0, 1.0], [0.1, 0.3])}
    md = ev.table(res, crlb={1.0: 0.851, 7.0: 0.083})
    for col in ("paper SEF3D", "paper DetNet3D", "paper DM-DetNet3D", "CRLB (3D bound)", "mine"):
        assert col in md
    f1_part, rmse_part = md.split("**RMSE")
    assert "| SNR 1 | 0.600 ± 0.141 | 0.376 ± 0.141 | 0.544 ± 0.118 | 0.623 ± 0.116 |" in f1_part
    assert "| SNR 7 | 0.200 ± 0.141 | 0.574 ± 0.011 | 0.508 ± 0.012 | 0.505 ± 0.015 | 0.083 |" in rmse_part
    assert "| Average | 0.800 ± 0.245 |" in f1_part and "0.896 ± 0.182" in f1_part


def test_crlb_by_snr_matches_method_md():
    c = ev.crlb_by_snr([1, 7])
    assert c[1.0] == pytest.approx(0.851, abs=0.01) and c[7.0] == pytest.approx(0.083, abs=0.005)


def _table1():
    spec = importlib.util.spec_from_file_location("table1", ROOT / "benchmarks" / "table1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table1_main_end_to_end(tmp_path, pooled_model_path, model_path, capsys):
    from onnx_models import default_info, smoothing_model

    from dmdet_infer import threshold as auto
    from dmdet_infer.detector import Detector

    floor = Detector(model_path, threshold=auto.GRID[0])  # a calibrated copy of the plain model: an auto row
    calibration = auto.calibrate(lambda v: floor.detect(v).score, shape=(6, 48, 48))
    smoothing_model(tmp_path / "plain.onnx", info=default_info(noise_peaks=calibration))
    out = tmp_path / "res" / "t1"
    argv = ["--model", f"dm={pooled_model_path}", "--model", f"plain={tmp_path / 'plain.onnx'}", "--n-per-cell", "1",
            "--n-val-per-cell", "1", "--shape", "6,48,48", "--seed", "11", "--out", str(out)]
    assert _table1().main(argv) == 0
    md = Path(f"{out}.md").read_text()
    assert "dm (integer maxima)" in md and "paper DM-DetNet3D" in md and "sef3d" in md
    assert md in capsys.readouterr().out
    report = json.loads(Path(f"{out}.json").read_text())
    assert set(report["results"]) == {"sef3d", "dm", "plain", "dm (integer maxima)", "dm (3-point refinement)",
                                      "plain (auto threshold)", "plain (auto, no pair split)"}
    auto, no_split = report["results"]["plain (auto threshold)"], report["results"]["plain (auto, no pair split)"]
    assert all(a["n_pred"] >= b["n_pred"] for a, b in zip(auto, no_split))  # a split only ever adds spots
    assert all(len(r) == 12 for r in report["results"].values())  # 4 SNR x 3 densities x 1
    assert 0.0 < report["tuned"]["dm"]["threshold"] < 1.0 and "k" in report["tuned"]["sef3d"]
    assert report["machine"]["cpu_count"] >= 1 and report["data"]["shape"] == [6, 48, 48]
    dm, integer = report["results"]["dm"], report["results"]["dm (integer maxima)"]
    assert [r["tp"] + r["fp"] for r in dm] == [r["tp"] + r["fp"] for r in integer]  # same detections
    assert Path(f"{out}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table1_rejects_bad_model_argument(capsys):
    with pytest.raises(SystemExit) as exc:
        _table1().parse_args(["--model", "no-equals-sign"])
    assert exc.value.code == 2 and "NAME=PATH" in capsys.readouterr().err
