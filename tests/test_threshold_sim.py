"""--threshold auto on the project's simulated stacks (training.evaluate.split_item): split off from test_threshold.py,
which also runs against the wheel alone (tests/wheel_tests.txt), because the simulator is in training/."""

from __future__ import annotations

import numpy as np
import pytest

from dmdet_infer.detector import Detector
from training.evaluate import split_item
from training.matching import score


@pytest.mark.parametrize("snr", [1.0, 7.0])
def test_auto_threshold_on_simulated_stacks(snr):
    """Auto is at least as good as the fixed tuned threshold at both ends of the SNR range, pooled over the three
    densities (25, 125 and 250 particles: one stack's F1 moves by 0.01 with one or two spots), and tiled = whole."""
    first = {1.0: 0, 7.0: 9}[snr]  # the three density cells of one item each
    det = Detector(threads=1)
    fixed = Detector(threshold=det.info.threshold, threads=1)
    found = {"auto": [0, 0, 0], "fixed": [0, 0, 0]}
    for index in range(first, first + 3):
        vol, pos, meta = split_item(4242, 2, index, 1, shape=(10, 256, 256))
        assert meta["snr"] == snr
        for name, d in (("auto", det), ("fixed", fixed)):
            r = score(d.detect(vol).zyx, pos)
            found[name] = [a + b for a, b in zip(found[name], (r["tp"], r["fp"], r["fn"]))]
    f1 = {k: 2 * tp / max(2 * tp + fp + fn, 1) for k, (tp, fp, fn) in found.items()}
    assert f1["auto"] >= f1["fixed"] - 0.01
    spots = det.detect(vol)
    tiled = Detector(threads=1, tile=(10, 64, 64)).detect(vol)
    np.testing.assert_allclose(tiled.zyx, spots.zyx, atol=1e-3)
