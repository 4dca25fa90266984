"""Benchmark dmdet_infer.peaks.find_peaks against a scipy pipeline with the same rules and output.

find_peaks: maxima and refinement in vectorised numpy, min-distance suppression in a numba kernel (since
2026-12-01; numba kernels for all of it before).

Run from the repository root: ``.venv/bin/python benchmarks/peaks.py``. Prints a markdown table and writes
``benchmarks/results/peaks.json``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import scipy
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from _reference_peaks import find_peaks_reference  # noqa: E402

from dmdet_infer.peaks import find_peaks  # noqa: E402
from training.targets import density_target  # noqa: E402

SHAPE = (10, 512, 512)
N_SPOTS = 1000
SIGMA = (1.0, 1.5, 1.5)
NOISE = 0.01
THRESHOLD = 0.3
MIN_DISTANCE = (1.5, 3.0, 3.0)


def gaussian_map(rng, shape, centres, sigma, noise=0.0) -> np.ndarray:
    """Max-combined point-sampled Gaussians with peak 1 at ``centres`` (+ independent Gaussian noise)."""
    d = density_target(shape, centres, tuple(sigma))
    if noise:
        d += (noise * rng.standard_normal(shape)).astype(np.float32)
    return d


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def subprocess_seconds(code: str, env: dict[str, str]) -> dict[str, float]:
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    return out


FIRST_CALL = """
import json, time
t0 = time.perf_counter()
import numpy as np
from dmdet_infer.peaks import find_peaks
t1 = time.perf_counter()
d = np.zeros((10, 64, 64), np.float32); d[5, 30, 30] = 1.0; d[5, 30, 31] = 0.6; d[4, 10, 10] = d[4, 10, 11] = 0.9
find_peaks(d, 0.3, (1.5, 3.0, 3.0))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t2 - t1}))
"""


def rmse_table(rng) -> list[dict]:
    """Per-axis RMSE of the refinement on 512 well-separated spots at random sub-voxel centres."""
    spacing, grid = (8, 10, 10), (2, 16, 16)
    shape = tuple(s * g for s, g in zip(spacing, grid))
    rows = []
    for sigma in ((1.0, 1.5, 1.5), (1.0, 1.0, 1.0), (1.5, 2.0, 2.0)):
        axes = [np.arange(g) * s + s / 2 for s, g in zip(spacing, grid)]
        centres = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        centres = centres + rng.uniform(-0.5, 0.5, centres.shape)
        clean = gaussian_map(rng, shape, centres, sigma)
        for noise in (0.0, 0.03):
            d = clean + (noise * rng.standard_normal(shape)).astype(np.float32)
            for refine in ("gaussian", "lsq", "parabolic", "centroid", "none"):
                p = find_peaks(d, 0.5, (3.0, 4.0, 4.0), refine)
                j = np.argmin(((p.coords[:, None] - centres[None]) ** 2).sum(-1), axis=1)
                rmse = np.sqrt(((p.coords - centres[j]) ** 2).mean(axis=0))
                rows.append(
                    dict(
                        sigma_zyx=sigma,
                        noise_sd=noise,
                        refine=refine,
                        n_found=len(p.scores),
                        n_true=len(centres),
                        rmse_zyx=[round(float(v), 4) for v in rmse],
                    )
                )
    return rows


def main() -> None:
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    rng = np.random.default_rng(2024)
    centres = rng.uniform(0, 1, (N_SPOTS, 3)) * np.asarray(SHAPE) - 0.5
    d = gaussian_map(rng, SHAPE, centres, SIGMA, NOISE)

    # JIT warm-up and output check (identical voxels and scores, coordinates to 1e-12)
    p = find_peaks(d, THRESHOLD, MIN_DISTANCE)
    coords, voxels, scores = find_peaks_reference(d, THRESHOLD, MIN_DISTANCE)
    assert np.array_equal(p.voxels, voxels) and np.array_equal(p.scores, scores)
    max_coord_diff = float(np.abs(p.coords - coords).max())
    assert max_coord_diff <= 1e-12, max_coord_diff
    for refine in ("centroid", "lsq", "none", "parabolic"):
        c2, v2, _ = find_peaks_reference(d, THRESHOLD, MIN_DISTANCE, refine)
        p2 = find_peaks(d, THRESHOLD, MIN_DISTANCE, refine)
        assert np.array_equal(p2.voxels, v2) and np.abs(p2.coords - c2).max() <= 1e-12

    ours_t, scipy_t, mf_t = [], [], []
    for _ in range(7):  # interleaved so that load from other processes hits both sides alike
        ours_t += timed(lambda: find_peaks(d, THRESHOLD, MIN_DISTANCE), 3)
        scipy_t += timed(lambda: find_peaks_reference(d, THRESHOLD, MIN_DISTANCE), 1)
        mf_t += timed(lambda: ndimage.maximum_filter(d, size=3), 1)
    ours_ms, scipy_ms, mf_ms = (1e3 * statistics.median(t) for t in (ours_t, scipy_t, mf_t))

    cache_dir = tempfile.mkdtemp(prefix="dmdet_numba_cache_")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=str(ROOT))
    cold = subprocess_seconds(FIRST_CALL, env)
    warm = subprocess_seconds(FIRST_CALL, env)
    shutil.rmtree(cache_dir, ignore_errors=True)
    env.pop("NUMBA_CACHE_DIR")
    imp = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import dmdet_infer"], cwd=ROOT, env=env, check=True)
        imp.append(time.perf_counter() - t)
    import_ms = 1e3 * statistics.median(imp)

    rmse = rmse_table(np.random.default_rng(7))
    total_s = time.perf_counter() - t_start

    cpu_model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    result = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        machine=dict(
            cpu_count=os.cpu_count(),
            cpu=cpu_model,
            platform=platform.platform(),
            python=platform.python_version(),
            numpy=np.__version__,
            scipy=scipy.__version__,
            numba=numba.__version__,
            numba_threading_layer="serial kernels (no prange)",
            loadavg_before=load_before,
            loadavg_after=os.getloadavg(),
        ),
        map=dict(
            shape=SHAPE,
            n_spots=N_SPOTS,
            sigma_zyx=SIGMA,
            noise_sd=NOISE,
            threshold=THRESHOLD,
            min_distance=MIN_DISTANCE,
            n_peaks=len(p.scores),
        ),
        identical_output=True,
        max_abs_coord_diff=max_coord_diff,
        find_peaks_ms=dict(median=ours_ms, min=1e3 * min(ours_t), repeats=len(ours_t)),
        scipy_pipeline_ms=dict(median=scipy_ms, min=1e3 * min(scipy_t), repeats=len(scipy_t)),
        scipy_maximum_filter_only_ms=dict(median=mf_ms, repeats=len(mf_t)),
        speedup_vs_scipy_pipeline=scipy_ms / ours_ms,
        speedup_vs_maximum_filter_only=mf_ms / ours_ms,
        first_call_cold_cache=cold,
        first_call_warm_cache=warm,
        import_dmdet_infer_ms=dict(median=import_ms, runs=[1e3 * t for t in imp]),
        refinement_rmse=rmse,
        benchmark_total_s=total_s,
    )
    out = ROOT / "benchmarks" / "results" / "peaks.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"find_peaks on {SHAPE} float32, {N_SPOTS} Gaussian spots sigma {SIGMA} + noise sd {NOISE}, "
        f"threshold {THRESHOLD}, min_distance {MIN_DISTANCE} -> {len(p.scores)} peaks; "
        f"{os.cpu_count()} CPUs, {cpu_model}, load {load_before[0]:.1f}\n"
    )
    print("| measurement | value |")
    print("| --- | --- |")
    print(f"| dmdet find_peaks (median of {len(ours_t)}) | {ours_ms:.2f} ms |")
    print(f"| scipy pipeline, same rules and output (median of {len(scipy_t)}) | {scipy_ms:.1f} ms |")
    print(f"| **speed-up vs scipy pipeline** | **{scipy_ms / ours_ms:.0f}x** |")
    print(
        f"| scipy maximum_filter(size=3) alone (median of {len(mf_t)}) | {mf_ms:.1f} ms "
        f"({mf_ms / ours_ms:.0f}x the dmdet total) |"
    )
    print(f"| output identical (voxels, scores; max coord diff) | yes ({max_coord_diff:.1e}) |")
    print(
        f"| cold numba cache: import dmdet_infer.peaks + first call | {cold['import_s']:.2f} s + "
        f"{cold['first_call_s']:.2f} s |"
    )
    print(
        f"| warm numba cache: import dmdet_infer.peaks + first call | {warm['import_s']:.2f} s + "
        f"{warm['first_call_s']:.2f} s |"
    )
    print(f'| `python -c "import dmdet_infer"` (median of 5, whole process) | {import_ms:.0f} ms |')
    for r in rmse:
        if r["refine"] in ("gaussian", "lsq", "parabolic"):
            print(
                f"| RMSE z,y,x {r['refine']}, sigma {r['sigma_zyx']}, noise sd {r['noise_sd']} "
                f"({r['n_found']}/{r['n_true']} spots) | {', '.join(f'{v:.3f}' for v in r['rmse_zyx'])} |"
            )
    print(f"\nbenchmark took {total_s:.1f} s; JSON: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
