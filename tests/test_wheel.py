"""dmdet_infer alone: a detection and a CLI run import nothing from the checkout or the training extras.

In the main suite and in the wheel-only run (tests/run_wheel_tests.sh), where it checks the installed wheel with its
shipped model. The detection runs in a fresh interpreter, since the test process itself imports torch and the
test tools.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # the checkout, or the wheel run's copy of tests/ and examples/
EXAMPLE = ROOT / "examples" / "virus_snr4.tif"

# Top-level modules that dmdet_infer must never need: the checkout's packages, the [train] extra, the test helpers'
# onnx (installed next to the wheel for the tests only), lazy or optional extras a TIFF detection does not use.
NOT_NEEDED = ["training", "export", "benchmarks", "torch", "onnx", "onnxscript", "scipy", "pandas", "matplotlib",
              "zarr", "dask", "distributed", "hypothesis", "pytest"]

_DETECT = """
import json, sys
import dmdet_infer, tifffile
from dmdet_infer import Detector
from dmdet_infer.cli import main
path, out = sys.argv[1:3]
spots = Detector().detect(tifffile.imread(path))
try:
    main([path, "-o", out, "-q"], standalone_mode=False)
except SystemExit as exc:  # the CLI exits with its status
    if exc.code:
        raise
print(json.dumps({"zyx": [list(map(float, p)) for p in zip(spots.z, spots.y, spots.x)],
                  "file": dmdet_infer.__file__,
                  "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def test_detection_imports_no_training_torch_or_extras(tmp_path):
    # cwd is the checkout: were dmdet_infer to import training/, it would succeed there and show in sys.modules (and
    # fail with ImportError in the wheel run, whose copy has no training/).
    out = tmp_path / "spots.csv"
    proc = subprocess.run([sys.executable, "-c", _DETECT, str(EXAMPLE), str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    loaded = sorted(set(NOT_NEEDED) & set(result["modules"]))
    assert not loaded, f"dmdet_infer ({result['file']}) imported {loaded}"
    # The shipped model finds the example's particles: most truths have a spot within 1.5 voxels, and the CSV agrees.
    found = np.array(result["zyx"])
    truth = np.loadtxt(ROOT / "examples" / "virus_snr4_truth.csv", delimiter=",", skiprows=1)
    nearest = np.sqrt(((truth[:, None, :] - found[None, :, :]) ** 2).sum(-1)).min(1)
    assert (nearest < 1.5).mean() >= 0.9 and len(found) <= 1.1 * len(truth), (len(found), len(truth))
    csv = np.loadtxt(out, delimiter=",", skiprows=1, ndmin=2)[:, :3]
    np.testing.assert_allclose(csv, found, atol=1e-3)
