"""Write the example stack shipped in ``examples/``: a simulated virus-scenario stack with its ground truth.

    python examples/make_example.py        # -> examples/virus_snr4.tif, examples/virus_snr4_truth.csv

10x256x256 voxels (1.3 MB as uint16), 125 particles (the PTC "mid" density, 500 per 512x512x10), SNR 4, background 10,
sigma_xy 1.5, sigma_z 1.0 voxels, Poisson noise; voxel size 0.3 x 0.1 x 0.1 µm is written into the file so that
the CSV gets µm columns too. Seeded: the files are reproducible.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.simulate import SimParams, simulate  # noqa: E402

HERE = Path(__file__).resolve().parent
NAME = "virus_snr4"


def main() -> None:
    params = SimParams(shape=(10, 256, 256), n_particles=125, snr=4.0, background=10.0)
    volume, positions = simulate(params, np.random.default_rng(2026))
    tifffile.imwrite(HERE / f"{NAME}.tif", np.clip(np.rint(volume), 0, 65535).astype(np.uint16), imagej=True,
                     resolution=(10.0, 10.0), metadata={"spacing": 0.3, "unit": "um", "axes": "ZYX"})
    np.savetxt(HERE / f"{NAME}_truth.csv", positions, fmt="%.4f", delimiter=",", header="z,y,x", comments="")
    print(f"wrote {HERE / NAME}.tif ({volume.shape}) and {len(positions)} true positions")


if __name__ == "__main__":
    main()
