"""Readers for the Particle Tracking Challenge's own files (users who own the data can train/evaluate on it).

- Ground truth XML: ``<root><TrackContestISBI2012 SNR= density= scenario=><particle><detection t= x= y= z=/>``;
  t is the 0-based frame, x the column, y the row (pixels), z the slice. Read as frame -> positions (N, 3) zyx.
  Coordinates are taken as they are (no origin shift): the challenge's convention is assumed to be 0-based with
  pixel centres at integers, like dmdet's.
- Images: a folder of per-slice TIFFs named like ``VIRUS snr 7 density low t000 z00.tif`` (grouped by t, sorted by
  z, stacked), a folder of per-frame 3D TIFFs (``... t000.tif``), or one multi-page TIFF holding the whole sequence
  (ImageJ hyperstack axes are used when present, otherwise pages are split into frames of ``z_slices``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

from dmdet_infer.errors import InputError, where

_SLICE_RE = re.compile(r"t(\d+)[\s_-]*z(\d+)$", re.IGNORECASE)
_FRAME_RE = re.compile(r"t(\d+)$", re.IGNORECASE)
_NAME_RE = re.compile(r"(?P<scenario>[a-z]+)\s+snr\s+(?P<snr>[\d.]+)\s+density\s+(?P<density>[a-z]+)", re.IGNORECASE)
_TIF = (".tif", ".tiff")


def parse_ptc_name(name: str) -> dict | None:
    """``"VIRUS snr 7 density low t000 z00.tif"`` -> {"scenario": "VIRUS", "snr": 7.0, "density": "low"}."""
    m = _NAME_RE.search(name)
    if m is None:
        return None
    return {"scenario": m["scenario"], "snr": float(m["snr"]), "density": m["density"].lower()}


def read_ptc_xml(path: str | Path) -> dict[int, np.ndarray]:
    """Ground truth XML -> {frame: positions float64 (N, 3) zyx}; frames without detections are absent."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise InputError(where(path, "ground-truth XML not found")) from None
    except ET.ParseError as e:
        raise InputError(where(path, f"not a valid XML file ({e})")) from None
    frames: dict[int, list[tuple[float, float, float]]] = {}
    for det in root.iter("detection"):
        try:
            t = int(float(det.attrib["t"]))
            zyx = (float(det.attrib.get("z", 0.0)), float(det.attrib["y"]), float(det.attrib["x"]))
        except (KeyError, ValueError) as e:
            raise InputError(where(path, f"detection without valid t/x/y/z attributes ({e})")) from None
        frames.setdefault(t, []).append(zyx)
    if not frames and root.find(".//particle") is None and root.find(".//TrackContestISBI2012") is None:
        raise InputError(where(path, "no <TrackContestISBI2012>/<particle>/<detection> elements; not a PTC file"))
    return {t: np.asarray(v, dtype=np.float64).reshape(-1, 3) for t, v in sorted(frames.items())}


def read_ptc_xml_meta(path: str | Path) -> dict:
    """Attributes of the ``TrackContestISBI2012`` element (e.g. SNR, density, scenario) as strings."""
    el = ET.parse(path).getroot()
    el = el if el.tag == "TrackContestISBI2012" else el.find(".//TrackContestISBI2012")
    return dict(el.attrib) if el is not None else {}


def _tiffs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _TIF)


def _iter_folder(folder: Path) -> Iterator[tuple[int, np.ndarray]]:
    files = _tiffs(folder)
    if not files:
        raise InputError(where(folder, "no TIFF files in this folder"))
    slices: dict[int, list[tuple[int, Path]]] = {}
    frames: dict[int, Path] = {}
    for f in files:
        if m := _SLICE_RE.search(f.stem):
            slices.setdefault(int(m[1]), []).append((int(m[2]), f))
        elif m := _FRAME_RE.search(f.stem):
            frames[int(m[1])] = f
    if slices:
        counts = {len(v) for v in slices.values()}
        if len(counts) != 1:
            raise InputError(where(folder, f"frames have different numbers of z slices: {sorted(counts)}"))
        for t in sorted(slices):
            planes = [tifffile.imread(f) for _, f in sorted(slices[t])]
            if any(p.ndim != 2 for p in planes):
                raise InputError(where(folder, f"frame t={t}: slice files must be 2D images"))
            yield t, np.stack(planes).astype(np.float32)
    elif frames:
        for t in sorted(frames):
            vol = np.asarray(tifffile.imread(frames[t]))
            if vol.ndim != 3:
                raise InputError(where(frames[t], f"expected a 3D stack (ZYX), got shape {vol.shape}"))
            yield t, vol.astype(np.float32)
    elif len(files) == 1:
        yield from _iter_file(files[0])
    else:
        raise InputError(where(folder, "TIFF names carry no 't<frame> z<slice>' or 't<frame>' suffix"))


def _iter_file(path: Path, z_slices: int = 10) -> Iterator[tuple[int, np.ndarray]]:
    with tifffile.TiffFile(path) as tf:
        series = tf.series[0]
        data = np.asarray(series.asarray())
        axes = series.axes.upper()
    if data.ndim == 4 and set(axes) >= {"T", "Z", "Y", "X"}:
        data = np.transpose(data, [axes.index(a) for a in "TZYX"])
    elif data.ndim == 3:
        if data.shape[0] % z_slices:
            raise InputError(where(path, f"{data.shape[0]} pages is not a multiple of {z_slices} slices per frame"))
        data = data.reshape(-1, z_slices, *data.shape[1:])
    elif data.ndim != 4:
        raise InputError(where(path, f"expected a 3D or 4D TIFF (pages or TZYX), got shape {data.shape}"))
    for t in range(data.shape[0]):
        yield t, data[t].astype(np.float32)


def iter_ptc_volumes(folder_or_file: str | Path, z_slices: int = 10) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame, volume float32 ZYX) from a PTC image folder or multi-page TIFF."""
    p = Path(folder_or_file)
    if p.is_dir():
        yield from _iter_folder(p)
    elif p.is_file():
        yield from _iter_file(p, z_slices)
    else:
        raise InputError(where(p, "image folder or TIFF not found"))


def load_ptc_sequence(
    folder_or_file: str | Path, xml: str | Path | None = None, z_slices: int = 10
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Yield (frame, volume float32 ZYX, positions (N, 3) zyx) for a PTC sequence.

    With ``xml`` None the positions are None; frames missing from the XML get an empty (0, 3) array.
    """
    truth = read_ptc_xml(xml) if xml is not None else None
    for t, vol in iter_ptc_volumes(folder_or_file, z_slices):
        pos = None if truth is None else truth.get(t, np.zeros((0, 3)))
        yield t, vol, pos
