"""User-annotated training data: ``stack.tif`` + ``stack.csv`` pairs -> list of (volume, positions).

The CSV needs a header row with at least ``z,y,x`` columns (any order, case-insensitive, extra columns ignored).
The dmdet-infer output CSV (``[frame,]z,y,x,score,intensity[,z_um,...]``) and napari point exports
(``axis-0,axis-1,axis-2`` = z,y,x, or ``axis-0..3`` = t,z,y,x) are accepted too. For a 4D (TZYX) stack the CSV needs
a ``frame`` column (or ``axis-0`` in a 4-axis napari export) and every frame becomes one item.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile

from dmdet_infer.errors import InputError, where


def read_points_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read (positions float64 (N, 3) zyx, frames int64 (N,) or None) from an annotation CSV."""
    path = Path(path)
    if not path.is_file():
        raise InputError(where(path, "annotation CSV not found"))
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise InputError(where(path, "empty CSV; expected a header row with columns z,y,x"))
    header = [h.strip().lower() for h in rows[0]]
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    if {"z", "y", "x"} <= set(header):
        cols, tcol = ["z", "y", "x"], "frame" if "frame" in header else None
    elif {"axis-0", "axis-1", "axis-2", "axis-3"} <= set(header):
        cols, tcol = ["axis-1", "axis-2", "axis-3"], "axis-0"
    elif {"axis-0", "axis-1", "axis-2"} <= set(header):
        cols, tcol = ["axis-0", "axis-1", "axis-2"], None
    else:
        missing = sorted({"z", "y", "x"} - set(header))
        raise InputError(where(path, f"missing column(s) {','.join(missing)}; header is {','.join(header)}"))
    idx = [header.index(c) for c in cols]
    try:
        pos = np.array([[float(r[i]) for i in idx] for r in body], dtype=np.float64).reshape(-1, 3)
        frames = None
        if tcol is not None:
            ti = header.index(tcol)
            frames = np.array([int(round(float(r[ti]))) for r in body], dtype=np.int64)
    except (ValueError, IndexError) as e:
        raise InputError(where(path, f"non-numeric or missing value in a z,y,x row ({e})")) from None
    if not np.all(np.isfinite(pos)):
        raise InputError(where(path, "non-finite coordinate (nan/inf)"))
    return pos, frames


def load_pair(tif: str | Path, csv_path: str | Path | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Load one stack (ZYX or TZYX) and its annotations (default: same name with .csv) -> [(volume, positions)]."""
    tif = Path(tif)
    csv_path = Path(csv_path) if csv_path is not None else tif.with_suffix(".csv")
    if not tif.is_file():
        raise InputError(where(tif, "stack not found"))
    if not csv_path.is_file():
        raise InputError(where(csv_path, f"annotation CSV for {tif.name} not found"))
    try:
        data = np.asarray(tifffile.imread(tif))
    except Exception as e:  # tifffile raises several types for bad files
        raise InputError(where(tif, f"cannot read TIFF ({e})")) from None
    data = np.squeeze(data) if data.ndim > 4 else data
    pos, frames = read_points_csv(csv_path)
    if data.ndim in (3, 4) and len(pos):
        lo, hi = pos.min(axis=0), pos.max(axis=0)
        limit = np.array(data.shape[-3:]) - 0.5
        if np.any(lo < -0.5) or np.any(hi > limit):
            raise InputError(where(csv_path, f"z,y,x outside the stack {data.shape[-3:]} (min {lo}, max {hi})"))
    if data.ndim == 3:
        if frames is not None and len(np.unique(frames)) > 1:
            raise InputError(where(csv_path, f"CSV has several frames but {tif.name} is a single 3D stack"))
        return [(data.astype(np.float32), pos)]
    if data.ndim == 4:
        if frames is None:
            raise InputError(where(csv_path, f"{tif.name} has {data.shape[0]} frames (TZYX); add a 'frame' column"))
        if len(frames) and (frames.min() < 0 or frames.max() >= data.shape[0]):
            raise InputError(where(csv_path, f"frame {frames.max()} out of range for {data.shape[0]} frames"))
        return [(data[t].astype(np.float32), pos[frames == t]) for t in range(data.shape[0])]
    raise InputError(where(tif, f"expected a 3D stack (ZYX) or TZYX, got shape {data.shape}"))


def stack_files(folder: str | Path) -> list[Path]:
    """The ``*.tif``/``*.tiff`` stacks of an annotation folder, in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(where(folder, "annotation folder not found"))
    tifs = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
    if not tifs:
        raise InputError(where(folder, "no .tif stacks in this folder"))
    return tifs


def load_annotations(folder: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """All ``*.tif``/``*.tiff`` in a folder with a sibling ``.csv`` of the same name -> list of (volume, positions)."""
    return [(volume, positions) for volume, positions, _ in load_annotated(folder)]


def load_annotated(folder: str | Path) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """As :func:`load_annotations`, each item with what it is: ``{"stack": file name}`` (and ``"frame"`` for the
    frames of a TZYX stack)."""
    items: list[tuple[np.ndarray, np.ndarray, dict]] = []
    for t in stack_files(folder):
        pairs = load_pair(t)
        for k, (volume, positions) in enumerate(pairs):
            items.append((volume, positions, {"stack": t.name, **({"frame": k} if len(pairs) > 1 else {})}))
    return items
