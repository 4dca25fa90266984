"""--threshold auto: the per-volume threshold from the model's noise calibration."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from dmdet_infer import threshold as auto
from dmdet_infer.cli import main
from dmdet_infer.detector import Detector
from dmdet_infer.errors import InputError
from dmdet_infer.metadata import from_props, to_props
from dmdet_infer.model import Model

# A made-up calibration: noise peaks are uniform in score below 0.8 at 1e-4 per voxel above 0.
RATE = {"thresholds": list(auto.GRID), "per_voxel": [1e-4 * max(0.0, 0.8 - t) / 0.8 for t in auto.GRID]}
N_VOXELS = 1_000_000  # -> 100 noise peaks above 0, 50 above 0.4, none above 0.8


def noise_scores(n_voxels: int = N_VOXELS) -> np.ndarray:
    return np.linspace(0.0, 0.8, int(1e-4 * n_voxels), endpoint=False) + 0.004


def test_bright_spots_get_a_threshold_above_the_noise():
    scores = np.concatenate([noise_scores(), np.full(200, 0.95)])
    t = auto.choose(scores, N_VOXELS, RATE, fallback=0.5)
    assert 0.75 <= t < 0.95  # every noise peak out, every spot in


def test_faint_spots_get_a_lower_threshold_than_bright_ones():
    faint = np.concatenate([noise_scores(), np.linspace(0.3, 0.9, 200)])
    bright = np.concatenate([noise_scores(), np.linspace(0.85, 0.99, 200)])
    assert auto.choose(faint, N_VOXELS, RATE, 0.5) < auto.choose(bright, N_VOXELS, RATE, 0.5)


def test_pure_noise_falls_back_to_the_fixed_threshold():
    assert auto.choose(noise_scores(), N_VOXELS, RATE, fallback=0.66) == 0.66
    assert auto.choose(np.zeros(0), N_VOXELS, RATE, fallback=0.66) == 0.66


def test_calibrate_counts_peaks_per_voxel_above_each_threshold():
    cal = auto.calibrate(lambda v: np.array([0.1, 0.5, 0.9]), shape=(2, 5, 10), volumes=2)
    rates = dict(zip(cal["thresholds"], cal["per_voxel"]))
    assert rates[0.05] == pytest.approx(6 / 200) and rates[0.5] == pytest.approx(2 / 200)
    assert rates[0.89] == pytest.approx(2 / 200) and rates[0.9] == 0.0  # strictly above


def test_calibration_round_trips_and_is_checked(model_path):
    info = Model(model_path).info
    props = to_props(info.__class__(**{**info.__dict__, "noise_peaks": RATE}))
    assert from_props(props).noise_peaks == RATE
    bad = dict(props, **{"dmdet.noise_peaks": '{"thresholds": [0.5, 0.4], "per_voxel": [0, 0]}'})
    with pytest.raises(ValueError, match="increase"):
        from_props(bad)


def test_shipped_model_is_calibrated_and_auto_by_default():
    det = Detector(threads=1)
    assert det.auto and det.search_threshold == auto.GRID[0] and det.threshold == det.info.threshold
    rates = det.info.noise_peaks["per_voxel"]
    assert all(b <= a for a, b in zip(rates, rates[1:])) and rates[0] > 0
    assert not Detector(threshold=0.5, threads=1).auto
    assert det.cut and auto.has_cut(det.info.noise_peaks)  # score and photometric-mass cut
    cut = np.asarray(det.info.noise_peaks["per_voxel_cut"])
    assert (np.diff(cut, axis=1) <= 0).all() and (cut <= np.asarray(rates)[:, None]).all()


# A made-up 2D calibration: the noise peaks of RATE, measured ones (score >= 0.5) with masses uniform in 0..50.
A = list(auto.PHOTON_GRID)
RATE_CUT = {**RATE, "measure_level": 0.5, "photons": A, "per_voxel_cut": [
    [1e-4 * (max(0.0, 0.8 - max(t, 0.5)) * max(0.0, 1 - a / 50) + max(0.0, 0.5 - t)) / 0.8 for a in A]
    for t in auto.GRID]}


def noise_masses(scores: np.ndarray) -> np.ndarray:
    mass = np.random.default_rng(0).uniform(0, 50, scores.size)
    return np.where(scores >= 0.5, mass, np.nan)


def test_choose_cut_drops_faint_noise_in_a_bright_volume_without_losing_low_scoring_spots():
    noise = noise_scores()
    spots = np.linspace(0.6, 0.99, 200)  # real spots whose scores overlap the noise peaks' ...
    scores = np.concatenate([noise, spots])
    mass = np.concatenate([noise_masses(noise), np.full(200, 400.0)])  # ... but far brighter
    t, a = auto.choose_cut(scores, mass, N_VOXELS, RATE_CUT, fallback=0.5)
    kept = (scores > t) & ~(mass <= a)
    assert kept[noise.size:].all() and kept[:noise.size].sum() <= 2
    t1 = auto.choose(scores, N_VOXELS, RATE, fallback=0.5)  # the score alone must trade one for the other
    assert ((scores > t1)[noise.size:]).sum() < 200 or (scores > t1)[:noise.size].sum() > 2


def test_choose_cut_leaves_faint_spots_alone_and_equals_choose_without_masses():
    noise = noise_scores()
    spots = np.linspace(0.3, 0.99, 200)
    scores = np.concatenate([noise, spots])
    mass = np.concatenate([noise_masses(noise), np.random.default_rng(1).uniform(0, 50, 200)])  # as faint as noise
    t, a = auto.choose_cut(scores, mass, N_VOXELS, RATE_CUT, fallback=0.5)
    assert ((scores > t) & ~(mass <= a))[noise.size:].sum() >= 0.9 * ((scores > t)[noise.size:]).sum()
    unmeasured = np.full(scores.size, np.nan)
    assert auto.choose_cut(scores, unmeasured, N_VOXELS, RATE_CUT, 0.5)[0] == auto.choose(scores, N_VOXELS, RATE_CUT,
                                                                                          0.5)
    assert auto.choose_cut(noise, noise_masses(noise), N_VOXELS, RATE_CUT, 0.66) == (0.66, -np.inf)


def test_calibrate_with_masses_counts_peaks_above_both_cuts():
    found = (np.array([0.1, 0.6, 0.9]), np.array([np.nan, 20.0, 200.0]))
    cal = auto.calibrate(lambda v: found, shape=(2, 5, 10), volumes=2)
    auto.check(cal)
    cut = dict(zip(cal["thresholds"], cal["per_voxel_cut"]))
    j = A.index(next(a for a in A if a > 20.0))  # first mass level above the 20-photon peak
    assert cut[0.05][0] == pytest.approx(6 / 200) and cut[0.05][j] == pytest.approx(4 / 200)  # NaN: never cut
    assert cut[0.6][j] == pytest.approx(2 / 200) and cut[0.6][-1] == 0.0
    with pytest.raises(ValueError, match="per_voxel_cut"):
        auto.check({**cal, "per_voxel_cut": cal["per_voxel_cut"][:3]})


def test_cli_threshold_values(tmp_path, model_path):
    import tifffile

    stack = tmp_path / "s.tif"
    tifffile.imwrite(stack, np.random.default_rng(0).poisson(10, (6, 32, 32)).astype(np.uint16))
    out = tmp_path / "s.csv"
    result = CliRunner().invoke(main, [str(stack), "-o", str(out), "--model", str(model_path), "--threshold", "auto"])
    assert result.exit_code != 0 and "noise calibration" in result.output and not out.exists()
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, [str(stack), "-o", str(out), "--threshold", "high"])
    assert result.exit_code != 0 and "'auto'" in result.output and not out.exists()
    with pytest.raises(InputError, match="auto"):
        Detector(model_path, threshold="high")


FAMILY = {**RATE, "stand_out_sd": auto.STAND_OUT_SD}


def test_with_a_noise_family_calibration_pure_noise_gets_no_spot():
    assert auto.choose(noise_scores(), N_VOXELS, FAMILY, fallback=0.66) == auto.NOTHING
    # a handful of spots above every noise peak do stand out, and get a threshold below them
    few = np.concatenate([noise_scores(), np.full(5, 0.95)])
    assert 0.75 <= auto.choose(few, N_VOXELS, FAMILY, fallback=0.66) < 0.95


def test_calibrate_over_a_noise_family_keeps_the_worst_rate():
    seen = []

    def scores_of(volume):
        seen.append(float(volume.mean()))
        return np.array([0.9]) if volume.mean() > 50 else np.array([0.1, 0.2])  # bright noise: one high peak

    cal = auto.calibrate(scores_of, shape=(2, 8, 8), volumes=1, noise=["poisson3", "poisson100"])
    rates = dict(zip(cal["thresholds"], cal["per_voxel"]))
    assert cal["noise"] == ["poisson3", "poisson100"] and len(seen) == 2
    assert rates[0.05] == pytest.approx(2 / 128)  # poisson3's two peaks
    assert rates[0.5] == pytest.approx(1 / 128)  # poisson100's high one
    assert cal["stand_out_sd"] == auto.STAND_OUT_SD


@pytest.mark.parametrize("name", sorted(auto.NOISE_MODELS))
def test_noise_models_have_no_structure_but_the_gradient(name):
    v = auto.NOISE_MODELS[name](np.random.default_rng(0), (4, 32, 32))
    assert v.shape == (4, 32, 32) and v.dtype == np.float32 and np.isfinite(v).all()
    halves = v[..., :16].mean(), v[..., 16:].mean()
    if "gradient" not in name:
        assert abs(halves[0] - halves[1]) < 0.1 * max(abs(np.mean(halves)), 1.0) + 0.5


def _family(*shapes):
    """A noise-family calibration from per-model rate curves."""
    models = [[float(f(t)) for t in auto.GRID] for f in shapes]
    return {"thresholds": list(auto.GRID), "per_voxel": np.max(models, axis=0).tolist(), "per_voxel_models": models,
            "stand_out_sd": auto.STAND_OUT_SD}


def test_noise_rates_take_the_level_from_the_stack_and_the_shape_from_the_models():
    cal = _family(lambda t: 1e-4 * max(0.0, 0.8 - t) / 0.8, lambda t: 4e-4 * max(0.0, 0.9 - t) / 0.9)
    quiet = noise_scores()  # as many low-scoring peaks as the first model makes
    rates, _, excess = auto.noise_rates(quiet, N_VOXELS, cal)
    assert excess == pytest.approx(1.0)
    i = auto.GRID.index(0.85)
    assert rates[i, 0] > 0  # the second model's longer tail, scaled down to this stack's level, still counts
    structured = np.concatenate([noise_scores(10 * N_VOXELS)])  # ten times the peaks of the noisiest model's ...
    _, _, excess = auto.noise_rates(structured, N_VOXELS, cal)
    assert excess >= auto.STRUCTURED


def test_the_cut_search_pools_the_noise_models_and_a_structured_stack_takes_the_worst():
    short = lambda t: 1e-4 * max(0.0, 0.8 - t) / 0.8  # noqa: E731  no noise peak above 0.8
    long = lambda t: 1e-4 * max(0.0, 0.9 - t) / 0.9  # noqa: E731  about as many low peaks, some up to 0.9
    cal = _family(short, long)
    stack = noise_scores()  # the first model's level: "nearest" to it, which has no peak above 0.8
    i = auto.GRID.index(0.85)
    _, pooled, _ = auto.noise_rates(stack, N_VOXELS, cal)
    _, worst, _ = auto.noise_rates(stack, N_VOXELS, cal, structured=True)
    assert pooled[i, 0] > 0  # the other model's tail counts: a peak at 0.85 is not taken as surely real
    assert worst[i, 0] == pytest.approx(2 * pooled[i, 0])  # the mean of the two models, against the highest
    assert np.all(worst >= pooled)
    # A bright stack with one noise-like peak at 0.85: pooled, the search weighs it as possibly false.
    bright = np.concatenate([stack, np.full(30, 0.97), [0.85]])
    assert auto.choose(bright, N_VOXELS, cal, fallback=0.5) >= 0.85


def test_a_structured_stack_does_not_get_a_threshold_below_the_validated_one():
    cal = _family(lambda t: 1e-4 * max(0.0, 0.8 - t) / 0.8)
    texture = np.linspace(0.05, 0.6, 3000)  # thousands of low-scoring peaks that no noise model makes
    spots = np.full(100, 0.9)
    t = auto.choose(np.concatenate([texture, spots]), N_VOXELS, cal, fallback=0.7)
    assert t >= 0.7


def test_the_cut_goes_below_the_validated_threshold_only_with_the_negated_stacks_consent():
    cal = {**_family(lambda t: 1e-4 * max(0.0, 0.8 - t) / 0.8), "photons": [10.0], "per_voxel_cut": [[0.0]] * 91,
           "per_voxel_cut_models": [[[0.0]] * 91], "measure_level": 0.5}
    faint = np.linspace(0.3, 0.9, 300)  # many faint spots: the noise estimate alone would go low
    scores = np.concatenate([noise_scores(), faint])
    mass = np.full(scores.shape, np.nan)
    calls = []

    def quiet_decoy():
        calls.append(1)
        return noise_scores()[:0], np.zeros(0), N_VOXELS  # the negated stack makes no peak at all

    t_without, _ = auto.choose_cut(scores, mass, N_VOXELS, cal, fallback=0.7)
    t_with, _ = auto.choose_cut(scores, mass, N_VOXELS, cal, fallback=0.7, decoy=quiet_decoy)
    assert t_without >= 0.7 and t_with < 0.7 and calls == [1]

    def noisy_decoy():  # the negated stack is as full of peaks as the stack itself: nothing may go low
        return scores, mass, N_VOXELS

    assert auto.choose_cut(scores, mass, N_VOXELS, cal, fallback=0.7, decoy=noisy_decoy)[0] >= 0.7


def test_background_correlation_tells_white_noise_from_texture():
    from dmdet_infer.normalise import correlation

    gaussian_filter = pytest.importorskip("scipy.ndimage", reason="the wheel run has no scipy").gaussian_filter

    rng = np.random.default_rng(0)
    white = rng.standard_normal((10, 128, 128))
    texture = gaussian_filter(rng.standard_normal((10, 128, 128)), (1, 3, 3))
    texture = texture / texture.std() + 0.3 * white
    assert abs(correlation(white)) < 0.02
    assert correlation(texture) > 0.3


def test_decoy_rates_are_scaled_up_to_the_stacks_own_low_band_never_down():
    """Skewed (few-photon) noise makes fewer peaks once negated: the decoy is scaled to the stack's own level
    in EXCESS_BAND (this let a Poisson-3 noise stack of 40x256x256 get 344 spots)."""
    from dmdet_infer.threshold import decoy_rates

    cal = {"thresholds": [0.1, 0.5, 0.9], "photons": [10.0]}
    rng = np.random.default_rng(0)
    decoy_scores = np.r_[rng.uniform(0.06, 0.24, 100), [0.6, 0.95]]
    decoy = (decoy_scores, np.full(decoy_scores.size, 50.0), 1_000_000)
    plain = decoy_rates(decoy, cal)
    skewed_stack = rng.uniform(0.06, 0.24, 800)  # 8x the decoy's band count on as many voxels
    scaled = decoy_rates(decoy, cal, skewed_stack, 1_000_000)
    assert np.all(scaled >= plain) and 5.0 < scaled[1, 0] / plain[1, 0] < 8.0
    quiet_stack = rng.uniform(0.06, 0.24, 20)  # fewer than the decoy: never scaled down
    np.testing.assert_array_equal(decoy_rates(decoy, cal, quiet_stack, 1_000_000), plain)


def test_a_single_noise_peak_above_every_calibrated_one_does_not_stand_out():
    """The calibration counts noise peaks in a finite sample: above the last one counted the rate is extrapolated
    (threshold._tail), not zero. Before, one noise peak at 0.91 made a pure Poisson-3 stack of 10x512x512 'stand
    out', and the search then let 13 false spots through."""
    cal = {**_family(lambda t: 1e-4 * max(0.0, 0.8 - t) / 0.8), "shape": [10, 256, 256], "volumes": 2}
    assert auto.calibration_voxels(cal) == 2 * 10 * 256 * 256
    assert auto.choose(np.concatenate([noise_scores(), [0.91]]), N_VOXELS, cal, fallback=0.7) == auto.NOTHING
    assert auto.choose(np.concatenate([noise_scores(), np.full(20, 0.91)]), N_VOXELS, cal, fallback=0.7) < 0.91
    grid = np.asarray(auto.GRID)
    tail = auto._tail(np.asarray(cal["per_voxel_models"][0]), auto.calibration_voxels(cal), grid)
    above = grid > 0.8  # no calibrated peak there: some expected all the same, fewer the higher the cut
    assert np.all(tail[above] > 0) and np.all(np.diff(tail) <= 0) and tail[-1] < 0.2 * tail[above][0]


def test_upper_count_is_a_poisson_upper_bound():
    chi2 = pytest.importorskip("scipy.stats", reason="the wheel run has no scipy").chi2

    for c in (0, 1, 4, 10, 100):
        exact = chi2.ppf(0.95, 2 * c + 2) / 2  # one-sided 95 % upper limit of a Poisson mean
        assert exact <= auto.upper_count(c) <= 1.1 * exact + 0.1


def test_a_gain_below_the_validated_threshold_must_stand_out_of_the_negated_sample():
    """The negated stack covers part of the stack; seeing no peak there does not make a lower cut free. At SNR 4
    and 7 this let a few noise peaks in at 0.53 on 100-spot stacks of 10x512x512 (negated crop: 1/7 of it)."""
    assert not auto.gain_stands_out(8, 0, factor=7.0)  # 8 more candidates: as many false peaks could hide in 6/7
    assert auto.gain_stands_out(40, 0, factor=7.0)
    assert auto.gain_stands_out(8, 0, factor=1.0)  # the negated stack covers it all: 8 is a real gain
    assert not auto.gain_stands_out(40, 4, factor=7.0)  # 4 negated peaks there stand for ~28 false ones
