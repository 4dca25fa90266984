"""benchmarks/generalisation.py and its generators (benchmarks/_generators.py), on tiny --quick stacks."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("bigfish")
pytest.importorskip("skimage")

from benchmarks import _generators as gen  # noqa: E402
from benchmarks import generalisation as gz  # noqa: E402
from training.matching import score  # noqa: E402

HAVE_SIMFISH = importlib.util.find_spec("simfish") is not None
OWN = [name for name, c in gen.CONDITIONS.items() if c.generator != "simfish"]


def test_conditions_cover_four_generators():
    assert len(gen.CONDITIONS) >= 8
    assert {c.generator for c in gen.CONDITIONS.values()} == {"ptc_indep", "simfish", "tissue", "yeast8bit"}


@pytest.mark.parametrize("name", OWN + (["simfish_a"] if HAVE_SIMFISH else []))
def test_generators_deterministic_and_truth_inside(name):
    vol, truth = gen.make_stack(name, "test", 0, seed=7, quick=True)
    vol2, truth2 = gen.make_stack(name, "test", 0, seed=7, quick=True)
    np.testing.assert_array_equal(vol, vol2)
    np.testing.assert_array_equal(truth, truth2)
    other, _ = gen.make_stack(name, "validation", 0, seed=7, quick=True)  # splits never share a stack
    assert not np.array_equal(vol, other)
    assert vol.ndim == 3 and truth.shape[1] == 3 and len(truth) > 0
    assert np.all(truth >= -0.5) and np.all(truth <= np.asarray(vol.shape) - 0.5)
    assert vol.dtype == (np.uint8 if name == "yeast8bit" else np.uint16)


def test_spot_drawn_at_its_truth_and_found_there_by_bigfish():
    vol = np.zeros((12, 48, 48), np.float32)
    truth = np.array([[5.0, 20.0, 30.0], [7.0, 35.0, 12.0], [4.0, 10.0, 10.0]])
    gen.add_gaussians(vol, truth, np.full(3, 500.0), (1.0, 1.5, 1.5))
    assert vol[5, 20, 30] == pytest.approx(500.0, rel=1e-3)  # the peak sits on the voxel of its coordinates
    found = gz.peers.detect_bigfish(vol, {"threshold": 10.0, "spot_radius_zyx": (1.0, 1.5, 1.5)})
    s = score(found, truth, 0.5)
    assert s["tp"] == 3 and s["fp"] == 0
    auto = gz.detect_bigfish_auto(vol + 1.0, (1.0, 1.5, 1.5))  # Big-FISH's own threshold, noise-free
    assert score(auto, truth, 0.5)["tp"] == 3


@pytest.mark.skipif(not HAVE_SIMFISH, reason="sim-fish not installed")
def test_simfish_truth_is_voxel_centred():
    """sim-fish's sub-pixel ground truth, shifted by -(f-1)/(2f), is the centroid of its (nearly noise-free) spots."""
    rng = np.random.default_rng(3)
    vol, truth = gen.simfish_stack(rng, shape=(12, 64, 64), n_spots=8, amplitude=20000.0, noise_level=0.0)
    vol = vol.astype(np.float64)
    errs = []
    for z, y, x in truth:
        zi, yi, xi = (int(round(c)) for c in (z, y, x))
        if not (3 <= zi < 9 and 6 <= yi < 58 and 6 <= xi < 58):
            continue
        if np.min(np.linalg.norm(truth - (z, y, x), axis=1)[np.linalg.norm(truth - (z, y, x), axis=1) > 0],
                  initial=99) < 8:
            continue
        w = vol[zi - 3:zi + 4, yi - 6:yi + 7, xi - 6:xi + 7]
        grid = np.mgrid[zi - 3:zi + 4, yi - 6:yi + 7, xi - 6:xi + 7]
        errs.append([(g * w).sum() / w.sum() - c for g, c in zip(grid, (z, y, x))])
    assert errs
    assert np.all(np.abs(np.mean(errs, axis=0)) < 0.15)


def test_model_keys():
    assert gz.model_keys([]) == {"dmdet": None}
    assert gz.model_keys([gz._model_arg("m.onnx")]) == {"dmdet": "m.onnx"}
    assert gz.model_keys([gz._model_arg("old=a.onnx"), gz._model_arg("new=b/c.onnx")]) == {
        "dmdet:old": "a.onnx", "dmdet:new": "b/c.onnx"}


def test_run_condition_criteria_and_pooling():
    """A stand-in detector (Big-FISH at a fixed threshold, no numba compile) through the dmdet code path."""
    class Fake:
        def detect(self, volume):
            return SimpleNamespace(zyx=gz.peers.detect_bigfish(
                volume.astype(np.float32), {"threshold": 3.0, "spot_radius_zyx": (1.05, 1.5, 1.5)}))

    row = gz.run_condition(gen.CONDITIONS["ptc_snr7"], ["dmdet", "bigfish_auto", "sef3d"], {"dmdet": Fake()},
                           seed=5, n_val=1, n_test=2, quick=True)
    res = row["results"]
    assert set(res) == {"dmdet", "bigfish_auto", "sef3d"}
    for r in res.values():
        st = r["per_stack"]
        assert len(st) == 2 and r["tp"] == sum(s["tp"] for s in st)
        assert r["f1"] == pytest.approx(2 * r["tp"] / (2 * r["tp"] + r["fp"] + r["fn"]))
    assert row["n_particles"] == sum(s["n_true"] for s in res["dmdet"]["per_stack"])
    assert row["best_tuned_peer"] == "sef3d"
    assert row["criteria"]["dmdet"] == {"gt_bigfish_auto": res["dmdet"]["f1"] > res["bigfish_auto"]["f1"],
                                        "ge_best_tuned_peer": res["dmdet"]["f1"] >= res["sef3d"]["f1"]}
    assert res["sef3d"]["f1"] > 0.5  # SNR 7 is easy for a tuned LoG


def test_cli_quick_writes_rows(tmp_path):
    out = tmp_path / "gen"
    assert gz.main(["--quick", "--conditions", "ptc_snr4,yeast8bit", "--methods", "bigfish_auto,bigfish,sef3d",
                    "--out", str(out)]) == 0
    report = json.loads((tmp_path / "gen.json").read_text())
    assert [r["condition"] for r in report["conditions"]] == ["ptc_snr4", "yeast8bit"]
    for r in report["conditions"]:
        assert r["n_particles"] > 0 and set(r["results"]) == {"bigfish_auto", "bigfish", "sef3d"}
        assert all(0.0 <= v["f1"] <= 1.0 for v in r["results"].values())
        assert r["best_tuned_peer"] in ("bigfish", "sef3d") and set(r["tuned"]) == {"bigfish", "sef3d"}
    text = (tmp_path / "gen.md").read_text()
    assert "| ptc_indep | ptc_snr4 |" in text and "| yeast8bit | yeast8bit |" in text
    assert (tmp_path / "gen.png").stat().st_size > 0
