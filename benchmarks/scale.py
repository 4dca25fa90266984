"""How dmdet scales: wall time, voxels/s and peak RSS against volume size, dask speed-up, time-lapse memory.

    python benchmarks/scale.py --small                 # tiny sizes: checks that everything runs (seconds)
    python benchmarks/scale.py                         # 10x512x512, 40x2048x2048, 100x4096x4096 (needs ~4 GB disk)
    python benchmarks/scale.py --model runs/best.onnx --workers 4 --format zarr

For each size a simulated uint16 stack (Poisson background 10, Gaussian spots, ~1 spot per 2e4 voxels) is written
slab by slab to a TIFF (memory-mapped on reading) or a Zarr store, then detected in a fresh subprocess that reports
its wall time and peak RSS (VmHWM, see ``peak_rss_bytes``). The exponent of RSS ~ voxels**k (least squares in
log-log) says whether memory is bounded (k ~ 0) or follows the volume (k ~ 1). Then the largest size once more on a dask
LocalCluster of ``--workers`` processes (speed-up against one process), and a time-lapse of ``--frames`` frames of
10x512x512 streamed from one TZYX TIFF (its RSS against the file size). Without ``--model`` the model shipped in
the package is used, or the tests' smoothing network when there is none. Writes JSON to
benchmarks/results/scale[_small].json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL = [(10, 512, 512), (40, 2048, 2048), (100, 4096, 4096)]
SMALL = [(4, 64, 64), (8, 128, 128), (10, 256, 256)]
SPOT_DENSITY = 1 / 2e4  # about a tenth of the PTC "mid" density


def _slab(shape, z0, nz, rng, positions, amp=60.0, sigma=(1.0, 1.5, 1.5)):
    """Planes z0..z0+nz of the simulated stack: Poisson(background + spots), uint16."""
    image = np.full((nz, *shape[1:]), 10.0, np.float32)
    for p in positions[(positions[:, 0] > z0 - 4) & (positions[:, 0] < z0 + nz + 4)]:
        lo = np.maximum(np.floor(p).astype(int) - [3, 5, 5], [z0, 0, 0])
        hi = np.minimum(np.floor(p).astype(int) + [4, 6, 6], [z0 + nz, shape[1], shape[2]])
        if (hi <= lo).any():
            continue
        g = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        r2 = sum(((g[a] - p[a]) / sigma[a]) ** 2 for a in range(3))
        image[lo[0] - z0:hi[0] - z0, lo[1]:hi[1], lo[2]:hi[2]] += amp * np.exp(-0.5 * r2)
    return rng.poisson(image).astype(np.uint16)


def write_volume(path: Path, shape, fmt: str, frames: int | None = None, seed: int = 0) -> Path:
    """A simulated stack (ZYX, or TZYX when ``frames``) written a few planes at a time."""
    import tifffile

    rng = np.random.default_rng(seed)
    full = (frames, *shape) if frames else tuple(shape)
    if fmt == "zarr":
        import zarr

        out = zarr.open_array(str(path), mode="w", shape=full, dtype="uint16",
                              chunks=(1,) * (len(full) - 3) + (min(shape[0], 16), 256, 256))
    else:
        out = tifffile.memmap(path, shape=full, dtype=np.uint16, imagej=True,
                              metadata={"axes": "TZYX" if frames else "ZYX"})
    n = max(1, int(np.prod(shape) * SPOT_DENSITY))
    for t in range(frames or 1):
        positions = rng.uniform([0, 0, 0], np.array(shape) - 1, (n, 3))
        step = max(1, (1 << 24) // (shape[1] * shape[2]))
        for z in range(0, shape[0], step):
            nz = min(step, shape[0] - z)
            block = _slab(shape, z, nz, rng, positions)
            if frames:
                out[t, z:z + nz] = block
            else:
                out[z:z + nz] = block
    if fmt != "zarr":
        out.flush()
        del out
    return path


def child(args) -> None:
    """Detect one file in this process and print wall time, spots and peak RSS as JSON."""
    from dmdet_infer import Detector
    from dmdet_infer.tiling import plan
    from dmdet_infer.zarr_io import read_input

    t0 = time.perf_counter()
    stack = read_input(args.child)
    tile = tuple(int(v) for v in args.tile.split(",")) if args.tile else None
    det = Detector(args.model, device="cpu", tile=tile)
    frame = stack.data.shape[1:]
    core = det.tile_shape(frame)
    tiles = plan(frame, core, det.info.halo_zyx, det.info.stride_zyx)
    read = sum(int(np.prod([s.stop - s.start for s in t.read])) for t in tiles)
    if args.workers:
        from dmdet_infer.distributed import DetectorSpec, connect, detect_many

        spec = DetectorSpec(args.model, tile=tile, threads=1)
        with connect(None, args.workers) as client:
            (spots,) = detect_many(client, [args.child], spec)
    else:
        spots = det.detect_stack(stack)
    wall = time.perf_counter() - t0
    rss = peak_rss_bytes()
    if args.csv:
        spots.to_csv(args.csv)
    print(json.dumps({"wall_s": wall, "spots": len(spots), "peak_rss_bytes": rss,
                      "voxels": int(np.prod(stack.data.shape)), "tile": list(core), "tiles_per_frame": len(tiles),
                      "read_overhead": read / float(np.prod(frame))}))


def peak_rss_bytes() -> int:
    """This process's own peak resident memory: VmHWM on Linux.

    Not ``getrusage().ru_maxrss``: Linux carries the parent's high-water mark across fork+exec into the child's
    ru_maxrss, so a child started after the parent wrote a 3.4 GB memory-mapped file reported 3.5 GB."""
    from dmdet_infer.memory import proc_bytes

    found = proc_bytes("/proc/self/status", "VmHWM")
    if found is not None:
        return found
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux, bytes on macOS


def run_child(path: Path, model: str, tile: str | None, workers: int | None = None, csv: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), "--model", model]
    if tile:
        cmd += ["--tile", tile]
    if workers:
        cmd += ["--workers", str(workers)]
    if csv:
        cmd += ["--csv", str(csv)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"child failed on {path}:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["voxels_per_s"] = result["voxels"] / result["wall_s"]
    return result


def exponent(x, y) -> float:
    """Least-squares slope of log(y) against log(x)."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def default_model(tmp: Path) -> str:
    from dmdet_infer.model import default_model_path

    if default_model_path().is_file():
        return str(default_model_path())
    sys.path.insert(0, str(ROOT / "tests"))
    from onnx_models import smoothing_model

    path = tmp / "smoothing.onnx"
    smoothing_model(path, pool=True)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="tiny sizes, to check that the benchmark runs")
    ap.add_argument("--model", help="exported model (default: the shipped one, else the tests' smoothing net)")
    ap.add_argument("--format", choices=["tif", "zarr"], default="tif")
    ap.add_argument("--tile", help="force the tile Z,Y,X (default: automatic)")
    ap.add_argument("--workers", type=int, default=None, help="dask LocalCluster size (default: CPU count)")
    ap.add_argument("--frames", type=int, default=None, help="time-lapse frames (default 100, 10 with --small)")
    ap.add_argument("--dir", type=Path, help="where to write the volumes (default: a temp folder)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--csv", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    sizes = SMALL if args.small else FULL
    frames = args.frames or (10 if args.small else 100)
    frame_shape = (4, 64, 64) if args.small else (10, 512, 512)
    workers = args.workers or min(os.cpu_count() or 1, 2 if args.small else 64)
    tile = args.tile
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        model = args.model or default_model(tmp)
        rows, paths = [], []
        suffix = ".zarr" if args.format == "zarr" else ".tif"
        for shape in sizes:
            path = write_volume(tmp / f"v{'x'.join(map(str, shape))}{suffix}", shape, args.format)
            paths.append(path)
            row = {"shape": list(shape), "file_bytes": _size(path),
                   **run_child(path, model, tile, csv=tmp / f"{path.stem}.csv")}
            rows.append(row)
            print(f"{row['shape']}: {row['wall_s']:.2f} s, {row['voxels_per_s'] / 1e6:.2f} Mvox/s, "
                  f"peak RSS {row['peak_rss_bytes'] / 2**20:.0f} MiB, {row['spots']} spots, tile {row['tile']} "
                  f"x{row['tiles_per_frame']} (reads {row['read_overhead']:.2f}x the voxels)", flush=True)
        voxels = [r["voxels"] for r in rows]
        fit = {"rss_vs_voxels": exponent(voxels, [r["peak_rss_bytes"] for r in rows]),
               "time_vs_voxels": exponent(voxels, [r["wall_s"] for r in rows]),
               "time_vs_voxels_read": exponent([v * r["read_overhead"] for v, r in zip(voxels, rows)],
                                               [r["wall_s"] for r in rows])}
        print(f"exponents: RSS ~ voxels^{fit['rss_vs_voxels']:.2f}, time ~ voxels^{fit['time_vs_voxels']:.3f} "
              f"(~ voxels read^{fit['time_vs_voxels_read']:.3f})", flush=True)

        # tiled (forced small tiles) against whole-volume on the smallest size
        small_tile = "4,32,32" if args.small else "10,128,128"
        tiled = run_child(paths[0], model, small_tile, csv=tmp / "tiled.csv")
        check = {"shape": rows[0]["shape"], "tile": small_tile, "tiles": tiled["tiles_per_frame"],
                 **compare(tmp / f"{paths[0].stem}.csv", tmp / "tiled.csv")}
        print(f"tiled {small_tile} ({tiled['tiles_per_frame']} tiles) vs whole on {rows[0]['shape']}: "
              f"same spots {check['same_spots']} (max shift {check['max_shift']:.2e})", flush=True)

        # LocalCluster against one process (the largest size with --small, else the middle one: the largest
        # would take as long again)
        di = len(rows) - 1 if args.small or len(rows) < 3 else len(rows) - 2
        dist = run_child(paths[di], model, tile, workers, csv=tmp / "dist.csv")
        dist.update({"shape": rows[di]["shape"], "speedup": rows[di]["wall_s"] / dist["wall_s"],
                     **compare(tmp / f"{paths[di].stem}.csv", tmp / "dist.csv")})
        print(f"LocalCluster x{workers} on {rows[di]['shape']}: {dist['wall_s']:.2f} s, speed-up "
              f"{dist['speedup']:.2f}, same spots: {dist['same_spots']}", flush=True)

        movie = write_volume(tmp / f"movie{suffix}", frame_shape, args.format, frames=frames)
        lapse = {"frames": frames, "frame_shape": list(frame_shape), "file_bytes": _size(movie),
                 **run_child(movie, model, tile)}
        one = next((r for r in rows if tuple(r["shape"]) == tuple(frame_shape)), None)
        if one is not None:
            lapse["rss_vs_one_frame"] = lapse["peak_rss_bytes"] / one["peak_rss_bytes"]
        print(f"time-lapse {frames}x{frame_shape}: {lapse['wall_s']:.2f} s, peak RSS "
              f"{lapse['peak_rss_bytes'] / 2**20:.0f} MiB for a {lapse['file_bytes'] / 2**20:.0f} MiB file"
              + (f" ({lapse['rss_vs_one_frame']:.2f}x one frame's run)" if one else ""), flush=True)
    out = ROOT / "benchmarks" / "results" / f"scale{'_small' if args.small else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "model": model if args.model else "default", "format": args.format,
        "tile": tile or "auto", "sizes": rows, "exponents": fit, "tiled_vs_whole": check,
        "distributed": {"workers": workers, **dist}, "timelapse": lapse}, indent=2))
    print(f"wrote {out}")


def compare(a: Path, b: Path) -> dict:
    """Whether two spot tables hold the same spots (positions within 1e-3 voxel)."""
    za, zb = (np.loadtxt(p, delimiter=",", skiprows=1, usecols=(0, 1, 2), ndmin=2) for p in (a, b))
    if za.shape != zb.shape:
        return {"same_spots": False, "max_shift": float("inf"), "spots": [len(za), len(zb)]}
    za, zb = za[np.lexsort(za.T[::-1])], zb[np.lexsort(zb.T[::-1])]
    shift = float(np.abs(za - zb).max()) if len(za) else 0.0
    return {"same_spots": shift <= 1e-3, "max_shift": shift, "spots": [len(za), len(zb)]}


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


if __name__ == "__main__":
    main()
