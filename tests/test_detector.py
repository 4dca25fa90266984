import threading

import numpy as np
import pytest
from onnx_models import render_spots

from dmdet_infer import Detector, Spots
from dmdet_infer.errors import InputError

TRUTH = np.array([[3.0, 10.2, 12.7], [5.4, 30.0, 40.3], [2.0, 45.6, 20.1], [6.7, 20.0, 50.5]])


@pytest.fixture(scope="module")
def detector(pooled_model_path):
    return Detector(pooled_model_path, device="cpu")


def _nearest(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.sqrt(((found[:, None] - truth[None]) ** 2).sum(-1)).min(0)


def test_detects_bright_spots_at_their_positions(detector):
    volume = render_spots((9, 60, 64), TRUTH, seed=1)
    spots = detector.detect(volume)
    assert isinstance(spots, Spots)
    assert len(spots) == len(TRUTH)
    assert _nearest(spots.zyx, TRUTH).max() < 0.6
    assert spots.frame is None
    peak_voxels = Detector(detector.model, refine="none").detect(volume).zyx.astype(int)  # same peaks, same order
    v = peak_voxels
    np.testing.assert_array_equal(spots.intensity, volume[v[:, 0], v[:, 1], v[:, 2]])
    assert np.abs(spots.zyx - peak_voxels).max() <= 0.5
    assert (spots.score > detector.threshold).all() and (spots.score <= 1).all()


def test_sub_voxel_refinement_beats_integer_maxima(pooled_model_path):
    volume = render_spots((9, 60, 64), TRUTH, noise=False)
    refined = Detector(pooled_model_path, device="cpu").detect(volume)
    integer = Detector(pooled_model_path, device="cpu", refine="none").detect(volume)
    err_refined = _nearest(refined.zyx, TRUTH)
    err_integer = _nearest(integer.zyx, TRUTH)
    assert np.sqrt((err_refined**2).mean()) < 0.5 * np.sqrt((err_integer**2).mean())


def test_tiled_detection_equals_whole_volume(pooled_model_path):
    rng = np.random.default_rng(5)
    truth = np.column_stack([rng.uniform(0, 7, 40), rng.uniform(0, 70, 40), rng.uniform(0, 90, 40)])
    truth[:4, 1] = [16.0, 16.5, 32.0, 47.5]  # on and next to the tile seams
    volume = render_spots((8, 71, 93), truth, seed=2)
    whole = Detector(pooled_model_path, device="cpu").detect(volume)
    tiled = Detector(pooled_model_path, device="cpu", tile=(3, 16, 16)).detect(volume)
    assert len(whole) == len(tiled) > 30
    np.testing.assert_allclose(tiled.zyx, whole.zyx, atol=1e-3)


def test_tiles_of_one_block_shape_run_one_after_another(pooled_model_path):
    """The tiles are run grouped by the shape of their network block (OpenVINO compiles once per shape and keeps
    one shape's memory at a time): each shape's calls are consecutive, every core is run once, and the spots are
    those of the whole volume."""
    rng = np.random.default_rng(6)
    truth = np.column_stack([rng.uniform(0, 7, 30), rng.uniform(0, 95, 30), rng.uniform(0, 95, 30)])
    volume = render_spots((8, 96, 96), truth, seed=3)
    detector = Detector(pooled_model_path, device="cpu", tile=(8, 24, 24), split_pairs=False)
    shapes: list[tuple[int, ...]] = []
    run = detector.model.run

    def recording(block):
        shapes.append(block.shape)
        return run(block)

    detector.model.run = recording
    tiled = detector.detect(volume)
    tile_shapes = shapes[:len(detector.cores(volume.shape))]  # then the negated stack's crop, when it is checked
    assert len(set(tile_shapes)) > 1
    runs = [shape for k, shape in enumerate(tile_shapes) if k == 0 or shape != tile_shapes[k - 1]]
    assert len(runs) == len(set(tile_shapes))  # no shape comes back after another
    whole = Detector(pooled_model_path, device="cpu", split_pairs=False).detect(volume)
    assert len(whole) == len(tiled) > 20
    np.testing.assert_allclose(tiled.zyx, whole.zyx, atol=1e-3)


def test_constant_and_uint_volumes(detector):
    assert len(detector.detect(np.full((4, 16, 16), 100, np.uint16))) == 0
    volume = render_spots((9, 60, 64), TRUTH, seed=3).astype(np.uint16)
    assert len(detector.detect(volume)) == len(TRUTH)


@pytest.mark.parametrize("volume,message", [
    (np.zeros((16, 16), np.float32), "2D image"),
    (np.zeros((0, 16, 16), np.float32), "empty image"),
    (np.zeros((2, 3, 4, 5, 6), np.float32), "expected a 3D ZYX volume"),
    (np.zeros((4, 8, 8), bool), "unsupported data type"),
    (np.full((4, 8, 8), np.nan, np.float32), "non-finite|NaN"),
])
def test_bad_volumes_are_refused(detector, volume, message):
    with pytest.raises(InputError, match=message):
        detector.detect(volume)


def test_bad_options_are_refused(pooled_model_path):
    with pytest.raises(InputError, match="threshold"):
        Detector(pooled_model_path, threshold=1.5)
    with pytest.raises(InputError, match="refine must be one of"):
        Detector(pooled_model_path, refine="magic")
    with pytest.raises(InputError, match="tile"):
        Detector(pooled_model_path, tile=(0, 8, 8))


def test_one_detector_shared_by_threads(detector):
    volumes = [render_spots((9, 60, 64), TRUTH, seed=s) for s in range(4)]
    expected = [detector.detect(v).zyx for v in volumes]
    results: dict[int, np.ndarray] = {}

    def work(i):
        results[i] = detector.detect(volumes[i % 4]).zyx

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        np.testing.assert_array_equal(results[i], expected[i % 4])


def test_frames_stream_with_frame_index_and_units(detector, tmp_path):
    frames = (render_spots((9, 60, 64), TRUTH, seed=s) for s in range(3))
    parts = list(detector.detect_frames(frames, voxel_size_um=(0.3, 0.1, 0.1)))
    assert [int(p.frame[0]) for p in parts] == [0, 1, 2]
    table = Spots.concat(parts)
    assert len(table) == 3 * len(TRUTH)
    cols = table.columns()
    assert list(cols) == ["frame", "z", "y", "x", "score", "intensity", "z_um", "y_um", "x_um",
                          "mass", "spread", "split"]
    np.testing.assert_allclose(cols["y_um"], table.y * 0.1)
    table.to_csv(tmp_path / "t.csv")
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0] == "frame,z,y,x,score,intensity,z_um,y_um,x_um,mass,spread,split"
    assert len(lines) == 1 + len(table)


def test_warmup_compiles_the_rare_numba_paths(detector):
    from dmdet_infer import peaks

    detector.warmup()
    assert {"_resolve_plateaus", "_plateau_open", "_suppress_cells"} <= set(peaks._JITTED)
    assert all(kernel.signatures for kernel in peaks._JITTED.values())


def test_overlap_gives_the_same_spots(pooled_model_path):
    """The CUDA pipelining (next tile's network in a worker thread, two frames at once), forced on for the CPU:
    the same spots, bit for bit, in the same order, tiled or not, for single volumes, frame lists and stacks."""
    from dmdet_infer.io import Stack

    volumes = [render_spots((9, 60, 64), TRUTH, seed=s) for s in range(3)]
    for tile in ((3, 16, 16), None):
        plain = Detector(pooled_model_path, device="cpu", tile=tile)
        overlapped = Detector(plain.model, tile=tile, overlap=True)
        assert not plain.overlap and overlapped.overlap  # default: off on the CPU
        assert len(plain.cores(volumes[0].shape)) == (48 if tile else 1)
        for volume in volumes:
            a, b = plain.detect(volume), overlapped.detect(volume)
            assert len(a) == len(TRUTH)
            for name in ("z", "y", "x", "score", "intensity"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        for frames in (volumes, np.stack(volumes)):
            a = Spots.concat(list(plain.detect_frames(iter(volumes))))
            b = Spots.concat(list(overlapped.detect_frames(frames)))
            np.testing.assert_array_equal(a.frame, b.frame)
            np.testing.assert_array_equal(a.zyx, b.zyx)
        stack = Stack.from_array(np.stack(volumes), axes="TZYX")
        a, b = plain.detect_stack(stack), overlapped.detect_stack(stack)
        np.testing.assert_array_equal(a.frame, b.frame)
        np.testing.assert_array_equal(a.zyx, b.zyx)


def test_overlap_with_the_default_model():
    """The shipped model (automatic threshold, negated-stack check, pair split) with four tiles."""
    volume = render_spots((10, 64, 64), TRUTH, amplitude=40.0, seed=2).astype(np.uint16)
    plain = Detector(device="cpu", tile=(10, 32, 32))
    a = plain.detect(volume)
    b = Detector(plain.model, tile=(10, 32, 32), overlap=True).detect(volume)
    assert len(plain.cores(volume.shape)) == 4
    np.testing.assert_array_equal(a.zyx, b.zyx)
    np.testing.assert_array_equal(a.score, b.score)
    assert a.meta == b.meta


def _pairs_with_faint_neighbours() -> np.ndarray:
    """Bright spots on a grid, every third a pair 2 voxels apart (some merged into one peak: the network resolves
    most pairs 3 apart), each with a faint spot 4.5 voxels away
    (whose peak scores between the two fixed thresholds of the test below)."""
    rng = np.random.default_rng(0)
    bright, faint = [], []
    for k, (y, x) in enumerate((y, x) for y in range(10, 92, 16) for x in range(10, 92, 16)):
        c = np.array([rng.uniform(3, 6), y, x])
        if k % 3 == 0:
            a = rng.uniform(0, np.pi)
            d = 1.0 * np.array([0.0, np.sin(a), np.cos(a)])
            bright += [c - d, c + d]
        else:
            bright.append(c)
        a = rng.uniform(0, 2 * np.pi)
        faint.append(c + np.array([rng.uniform(-1, 1), 4.5 * np.sin(a), 4.5 * np.cos(a)]))
    shape = (10, 100, 100)
    return render_spots(shape, np.array(bright), amplitude=40.0, seed=1) + render_spots(
        shape, np.array(faint), amplitude=9.0, background=0.0, noise=False)


def test_the_threshold_jobs_come_from_the_model():
    auto, fixed = Detector(device="cpu"), Detector(device="cpu", threshold=0.3)
    info = auto.info
    assert auto.fixed_threshold is None and fixed.fixed_threshold == 0.3
    for det in (auto, fixed):
        assert det.fallback_threshold == det.split_min_score == det.window_level == info.threshold
    assert auto.measure_level == min(info.threshold, info.noise_peaks["measure_level"])
    assert fixed.measure_level == info.threshold  # measured windows do not follow the fixed cut
    assert auto.search_floor == info.noise_peaks["thresholds"][0] and fixed.search_floor == 0.3
    assert auto.threshold == info.threshold and fixed.threshold == 0.3  # the attribute of before, one job now
    fixed.threshold = 0.4
    assert (fixed.fixed_threshold, fixed.split_min_score, fixed.search_floor) == (0.4, info.threshold, 0.4)
    with pytest.raises(InputError, match="threshold must be in"):
        fixed.threshold = 2.0


def test_a_fixed_threshold_changes_the_cut_only():
    """A spot scoring above both fixed thresholds keeps its position, mass and split: the windows are bounded and
    the pairs chosen at the model's levels. (When the fixed threshold did all the jobs, the faint neighbours found
    at 0.2 bounded the bright spots' windows and moved the split pair.)"""
    volume = _pairs_with_faint_neighbours()
    low = Detector(device="cpu", threshold=0.2, precision="fp32")  # fp32: bf16 splits none of these pairs
    high = Detector(low.model, threshold=0.5)
    a, b = low.detect(volume), high.detect(volume)
    assert len(a) > len(b)  # the cut is the threshold's job
    a = a[a.score > 0.5]
    assert len(a) == len(b) > 40 and b.features["split"].sum() >= 2
    np.testing.assert_array_equal(a.zyx, b.zyx)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.features["mass"], b.features["mass"])
    np.testing.assert_array_equal(a.features["split"], b.features["split"])
    assert np.isfinite(b.features["mass"][b.score >= high.split_min_score]).all()
