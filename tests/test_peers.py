"""benchmarks/peers.py: every adapter on small simulated stacks (the real libraries, no mocks) and the tuning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import peers
from training import evaluate as ev
from training.matching import score
from training.simulate import amplitude_from_snr, render_spots

PSF = (1.0, 1.5, 1.5)
# trackpy 0.7 under pandas 3 warns about its own use of ``inplace``; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")

#: Hand-set parameters for the detection test (well inside each method's grid).
FIXED = {
    "sef3d": {"sigma_zyx": PSF, "k": 5.0, "refine": "none", "min_distance": (1.0, 1.0, 1.0)},
    "bigfish": {"spot_radius_zyx": PSF, "threshold": 4.0},
    "bigfish_subpixel": {"spot_radius_zyx": PSF, "threshold": 4.0},
    "trackpy": {"diameter_zyx": (3, 7, 7), "minmass": 50.0},
    "blob_log": {"min_sigma": PSF, "max_sigma": PSF, "num_sigma": 1, "threshold": 5.0},
}


def _need(method: str) -> None:
    req = peers.METHODS[method].requires
    if req is not None:
        pytest.importorskip(req[0], reason=f"needs {req[1]} ({peers.INSTALL_HINT})")


def _stack(rng: np.random.Generator, n: int = 10, shape=(10, 64, 64), snr: float = 7.0):
    """A PTC-style stack (background 10, PSF sigma 1.0/1.5, Poisson noise) with ``n`` spots >= 6 voxels apart and
    away from the faces: trackpy ignores maxima within its margin (diameter // 2) of the faces, by design."""
    pos: list[np.ndarray] = []
    while len(pos) < n:
        p = rng.uniform([1.0, 6.0, 6.0], [shape[0] - 2.0, shape[1] - 7.0, shape[2] - 7.0])
        if all(np.linalg.norm(p - q) >= 6.0 for q in pos):
            pos.append(p)
    truth = np.array(pos)
    expected = 10.0 + render_spots(shape, truth, PSF, amplitude_from_snr(snr, 10.0))
    return rng.poisson(expected).astype(np.float32), truth


@pytest.fixture(scope="module")
def stacks() -> list[tuple[np.ndarray, np.ndarray]]:
    """Two 10x64x64 stacks, SNR 7, 10 spots each."""
    rng = np.random.default_rng(2024)
    return [_stack(rng) for _ in range(2)]


def _params(method: str) -> dict:
    return {"threshold": 0.3} if method == "dmdet" else {} if method == "dmdet_auto" else FIXED[method]


def _sorted(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])] if len(a) else a


@pytest.mark.parametrize("method", list(peers.METHODS))
def test_adapter_finds_the_spots(method, stacks):
    _need(method)
    for vol, pos in stacks:
        pred = peers.METHODS[method].detect(vol, _params(method))
        assert pred.dtype == np.float64 and pred.ndim == 2 and pred.shape[1] == 3
        s = score(pred, pos)
        assert s["recall"] >= 0.7 and s["precision"] >= 0.7, (method, s)
        assert s["rmse"] < 1.0


def test_subpixel_fit_moves_bigfish_spots_off_the_grid(stacks):
    _need("bigfish")
    vol, pos = stacks[0]
    integer = peers.detect_bigfish(vol, FIXED["bigfish"])
    fitted = peers.detect_bigfish_subpixel(vol, FIXED["bigfish"])
    assert len(fitted) == len(integer) and np.all(integer == np.round(integer))
    assert not np.all(fitted == np.round(fitted))
    assert score(fitted, pos)["rmse"] < score(integer, pos)["rmse"]


@pytest.mark.parametrize("method", ["bigfish", "trackpy"])
def test_candidate_sweep_equals_calling_the_detector(method, stacks):
    """Filtering the lowest-threshold candidates by score = detecting at that threshold."""
    _need(method)
    g = peers.GRIDS[method]
    vol, _ = stacks[1]
    setting = g["settings"][4]
    cand = {"bigfish": peers.bigfish_candidates, "trackpy": peers.trackpy_candidates}[method](
        vol, setting, min(g["thresholds"]))
    for t in (g["thresholds"][0], g["thresholds"][len(g["thresholds"]) // 2], 40.0):
        direct = peers.METHODS[method].detect(vol, {**setting, g["key"]: t})
        np.testing.assert_allclose(_sorted(cand.coords[cand.scores > t]), _sorted(direct))


@pytest.mark.parametrize("method", ["bigfish", "trackpy", "blob_log"])
def test_grid_tuning_picks_from_the_grid(method, stacks):
    _need(method)
    tuner = peers.grid_tuner(method)
    for vol, pos in stacks:
        tuner.add(vol, pos)
    params, f1 = tuner.best()
    g = peers.GRIDS[method]
    assert {k: v for k, v in params.items() if k != g["key"]} in g["settings"]
    assert params[g["key"]] in g["thresholds"] and f1 >= 0.8
    curves = tuner.curves()
    assert len(curves) == len(g["settings"]) and f1 == pytest.approx(max(max(c.values()) for c in curves))


def test_dmdet_and_sef3d_tuning(stacks):
    for method in ("dmdet", "dmdet_auto", "sef3d"):
        tuner = peers.make_tuner(method)
        for vol, pos in stacks:
            tuner.add(vol, pos)
        params, f1 = tuner.best()
        assert f1 >= 0.8, method
        if method == "dmdet":
            assert ev.FLOOR_THRESHOLD <= params["threshold"] <= 0.99 and params["refine"] == "lsq"
        elif method == "dmdet_auto":
            assert params["threshold"] == "auto"  # nothing tuned: the validation F1 of the default run
        else:
            assert tuple(params["sigma_zyx"]) in ev.sef3d_sigma_grid() and params["k"] in peers.SEF3D_KS


def test_missing_peer_is_one_line_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(peers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as exc:
        peers.check_installed(["dmdet", "trackpy"])
    msg = str(exc.value.code)
    assert "\n" not in msg and 'pip install -e ".[peers]"' in msg and "trackpy" in msg
    peers.check_installed(["dmdet", "sef3d"])  # no peer package needed


def test_methods_argument(capsys):
    assert peers.parse_args(["--methods", "trackpy,dmdet,trackpy"]).methods == ["trackpy", "dmdet"]
    assert peers.parse_args([]).methods == list(peers.METHODS) and peers.parse_args([]).n_per_cell == 3
    with pytest.raises(SystemExit) as exc:
        peers.parse_args(["--methods", "cellpose"])
    assert exc.value.code == 2 and "--methods" in capsys.readouterr().err


def test_main_end_to_end(tmp_path, capsys):
    for method in ("bigfish", "trackpy", "blob_log"):
        _need(method)
    out = tmp_path / "res" / "peers"
    argv = ["--methods", "sef3d,bigfish,bigfish_subpixel,trackpy,blob_log", "--n-per-cell", "1",
            "--n-val-per-cell", "1", "--shape", "6,40,40", "--out", str(out)]
    assert peers.main(argv) == 0
    md = Path(f"{out}.md").read_text()
    assert md in capsys.readouterr().out and "Big-FISH + fit_subpixel" in md and "s / 6x40x40 volume" in md
    report = json.loads(Path(f"{out}.json").read_text())
    assert set(report["results"]) == {"sef3d", "bigfish", "bigfish_subpixel", "trackpy", "blob_log"}
    assert all(len(r) == 12 for r in report["results"].values())
    assert report["tuned"]["bigfish"]["threshold"] in peers.GRIDS["bigfish"]["thresholds"]
    assert report["timing"]["trackpy"]["seconds_per_volume"] > 0 and report["machine"]["versions"]["trackpy"]
    assert Path(f"{out}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
