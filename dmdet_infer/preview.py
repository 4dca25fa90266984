"""Preview picture: a z maximum-intensity projection with the detected spots (and the truth) circled, as PNG.

The picture is what a user looks at before trusting a spot table. Colours (no legend is drawn, there are no fonts):

- **magenta** ``(255, 0, 255)`` rings: detected spots (radius 4 px at scale 1);
- **green** ``(0, 255, 0)`` rings: ground truth, when given (radius 6 px at scale 1, so both stay visible).

The PNG is written with the standard library only (``zlib`` + ``struct``); it carries the colour key, the spot
counts and the title as text chunks, which image viewers show as metadata.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InputError, where
from .io import atomic_write

__all__ = ["SPOT_COLOUR", "TRUTH_COLOUR", "encode_png", "mip_rgb", "write_preview"]

SPOT_COLOUR = (255, 0, 255)  # magenta: detected spots
TRUTH_COLOUR = (0, 255, 0)  # green: ground truth
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.8
MIN_SIDE = 512  # automatic scaling: the longer side is upscaled (nearest) to at least this ...
MAX_SIDE = 2048  # ... and downscaled (block maximum) to at most this
LIMIT_SIDE = 16384  # an explicit ``scale`` may not make a side longer than this
SPOT_RADIUS = 4  # output pixels at scale 1; rings grow with the upscaling factor
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BATCH = 4096  # spots drawn per vectorised batch (bounds the memory of the index arrays)


def mip_rgb(volume: np.ndarray, spots_zyx: Any, truth_zyx: Any | None = None, *,
            scale: int | None = None) -> np.ndarray:
    """Build the preview: z-MIP, contrast-stretched, as ``(H, W, 3) uint8`` with spots and truth circled.

    Grey levels map the 0.5 and 99.8 percentiles of the (finite) projection to black and white; a constant image
    is mid-grey. ``scale=None`` picks the size: the longer side is upscaled by an integer factor (nearest) to at
    least 512 px, or downscaled by block maximum to at most 2048 px. An integer ``scale >= 1`` upscales the
    full-resolution projection by that factor instead. Spots are (N, 3) zyx in voxels (z is ignored; points
    outside the image are clipped, non-finite ones skipped); detections are magenta rings, truth green rings.
    """
    mip = _projection(volume)
    factor, block = _scaling(mip.shape, scale)
    if block > 1:
        mip = _block_max(mip, block)
    gray = _stretch(mip)
    if factor > 1:
        gray = np.repeat(np.repeat(gray, factor, axis=0), factor, axis=1)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    f = factor / block
    thickness = max(1, factor // 3)
    radius = max(SPOT_RADIUS, round(SPOT_RADIUS * f))
    if truth_zyx is not None:
        _draw_rings(rgb, _yx(truth_zyx, "truth"), f, radius + thickness + 1, thickness, TRUTH_COLOUR)
    _draw_rings(rgb, _yx(spots_zyx, "spots"), f, radius, thickness, SPOT_COLOUR)
    return rgb


def encode_png(rgb: np.ndarray, text: Mapping[str, str] | None = None) -> bytes:
    """Encode an ``(H, W, 3) uint8`` image as an 8-bit RGB PNG; ``text`` adds UTF-8 (iTXt) metadata chunks."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f"encode_png needs a non-empty (H, W, 3) uint8 array, not {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    if max(height, width) >= 2**31:
        raise ValueError(f"encode_png: image too large for PNG ({height} x {width})")
    raw = np.empty((height, 1 + 3 * width), dtype=np.uint8)
    raw[:, 0] = 0  # filter type 0 (None) on every row
    raw[:, 1:] = rgb.reshape(height, 3 * width)
    # IHDR: width, height, bit depth 8, colour type 2 (RGB), compression 0, filter 0, interlace 0
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
    for key, value in (text or {}).items():
        keyword = key.encode("latin-1")
        if not 1 <= len(keyword) <= 79 or b"\0" in keyword:
            raise ValueError(f"encode_png: bad text keyword {key!r} (1-79 Latin-1 characters, no NUL)")
        payload = str(value).replace("\0", "").encode("utf-8")
        # iTXt: keyword, NUL, compression flag 0, method 0, empty language tag + NUL, empty translation + NUL
        chunks.append(_chunk(b"iTXt", keyword + b"\0\0\0\0\0" + payload))
    chunks.append(_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)))
    chunks.append(_chunk(b"IEND", b""))
    return _PNG_SIGNATURE + b"".join(chunks)


def write_preview(path: str | os.PathLike[str], volume: np.ndarray, spots_zyx: Any, truth_zyx: Any | None = None,
                  *, scale: int | None = None, title: str | None = None) -> None:
    """Write the :func:`mip_rgb` picture to ``path`` as PNG, atomically (nothing is written if anything fails).

    Magenta rings are the detected spots, green rings the ground truth. ``title`` (with the colour key and the
    spot counts) is stored as PNG text metadata, not drawn.
    """
    try:
        rgb = mip_rgb(volume, spots_zyx, truth_zyx, scale=scale)
    except InputError as exc:
        raise InputError(where(path, str(exc))) from None
    n_spots = len(_yx(spots_zyx, "spots"))
    description = f"magenta circles: {n_spots} detected spots"
    if truth_zyx is not None:
        description += f"; green circles: {len(_yx(truth_zyx, 'truth'))} ground-truth spots"
    text = {"Software": "dmdet", "Description": description + "; z maximum-intensity projection"}
    if title:
        text["Title"] = title
    data = encode_png(rgb, text)
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _projection(volume: Any) -> np.ndarray:
    """Maximum over z as float (NaN ignored unless a whole column is NaN; such pixels become -inf: black)."""
    vol = volume if isinstance(volume, np.ndarray) else np.asarray(volume)
    if vol.ndim != 3 or 0 in vol.shape:
        raise InputError(f"preview needs a non-empty 3D (Z, Y, X) volume, not shape {vol.shape}")
    if vol.dtype == bool:
        vol = vol.view(np.uint8)
    if not (np.issubdtype(vol.dtype, np.integer) or np.issubdtype(vol.dtype, np.floating)):
        raise InputError(f"preview needs a real-valued volume, not dtype {vol.dtype}")
    if np.issubdtype(vol.dtype, np.floating):
        mip = np.fmax.reduce(vol, axis=0)
    else:
        mip = vol.max(axis=0)
    mip = np.asarray(mip, dtype=np.float64 if vol.dtype == np.float64 else np.float32)
    mip[np.isnan(mip)] = -np.inf
    return mip


def _scaling(shape: tuple[int, ...], scale: int | None) -> tuple[int, int]:
    """Return ``(upscale factor, downscale block)``; one of them is 1."""
    side = max(shape)
    if scale is None:
        if side > MAX_SIDE:
            return 1, math.ceil(side / MAX_SIDE)
        return max(1, math.ceil(MIN_SIDE / side)), 1
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise InputError(f"preview scale must be an integer >= 1 (or None for automatic), not {scale!r}")
    if side * int(scale) > LIMIT_SIDE:
        raise InputError(f"preview scale {scale} makes the picture {side * int(scale)} px wide; "
                         f"keep it at most {LIMIT_SIDE} px (use a smaller scale or None)")
    return int(scale), 1


def _block_max(mip: np.ndarray, block: int) -> np.ndarray:
    """Downscale by the maximum over ``block x block`` tiles (edge tiles padded with -inf)."""
    h, w = mip.shape
    hb, wb = -(-h // block), -(-w // block)
    padded = np.full((hb * block, wb * block), -np.inf, dtype=mip.dtype)
    padded[:h, :w] = mip
    return padded.reshape(hb, block, wb, block).max(axis=(1, 3))


def _stretch(mip: np.ndarray) -> np.ndarray:
    """Map the low/high percentiles of the finite values to 0/255 (constant -> 128; +inf white, -inf black)."""
    finite = mip[np.isfinite(mip)]
    if finite.size:
        lo, hi = (float(v) for v in np.percentile(finite, [LOW_PERCENTILE, HIGH_PERCENTILE]))
    else:
        lo = hi = 0.0
    if not hi > lo:
        return np.where(mip > lo, 255, np.where(mip < lo, 0, 128)).astype(np.uint8)
    scaled = (mip.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def _yx(points: Any, name: str) -> np.ndarray:
    """(N, 2) float64 yx of the finite points; an empty list of any shape is no points."""
    arr = np.asarray(points, dtype=np.float64) if points is not None else np.empty((0, 3))
    if arr.size == 0:
        return np.empty((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"preview {name} must be an (N, 3) array of zyx positions, not shape {arr.shape}")
    yx = arr[:, 1:]
    return yx[np.isfinite(yx).all(axis=1)]


def _ring_offsets(radius: int, thickness: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets whose distance d from the centre satisfies radius - thickness + 0.5 < d < radius + 0.5."""
    r = np.arange(-radius - 1, radius + 2)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    d = np.hypot(dy, dx)
    ring = (d > radius - thickness + 0.5) & (d < radius + 0.5)
    return dy[ring], dx[ring]


def _draw_rings(rgb: np.ndarray, yx: np.ndarray, f: float, radius: int, thickness: int,
                colour: tuple[int, int, int]) -> None:
    """Draw rings centred on ``yx`` (input pixels) mapped to output pixels by the scale factor ``f``."""
    if len(yx) == 0:
        return
    h, w = rgb.shape[:2]
    # Input pixel i spans output pixels [i f, (i + 1) f): its centre is (i + 0.5) f - 0.5.
    # floor((p + 0.5) f - 0.5 + 0.5) is the nearest output pixel; clipping keeps far-away points off int overflow
    centres = np.floor(np.clip((yx + 0.5) * f, -2.0**40, 2.0**40)).astype(np.int64)
    keep = ((centres[:, 0] >= -radius - 1) & (centres[:, 0] <= h + radius)
            & (centres[:, 1] >= -radius - 1) & (centres[:, 1] <= w + radius))
    centres = centres[keep]
    dy, dx = _ring_offsets(radius, thickness)
    colour_arr = np.array(colour, dtype=np.uint8)
    for start in range(0, len(centres), _BATCH):
        c = centres[start:start + _BATCH]
        ys = (c[:, :1] + dy).ravel()
        xs = (c[:, 1:] + dx).ravel()
        inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        rgb[ys[inside], xs[inside]] = colour_arr
