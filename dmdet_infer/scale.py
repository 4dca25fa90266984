"""Spot scale: the spot size a stack has, and resampling it to the size the model works at.

A model says in its metadata (``dmdet.spot_sigma_zyx``, ``dmdet.spot_sigma_range_zyx``) the Gaussian σ, in
voxels, of the spots it was trained on: a nominal size and the range it saw. A stack whose spots lie outside that
range is resampled (linear interpolation, grid anchored at voxel 0) so that its spots get the nominal size, and
the positions found are mapped back to the stack's voxels.

The spot size comes from the user (``--spot-size``: σ or FWHM, in voxels or in µm with the voxel size) or, by
default, from the stack itself (:func:`estimate`): Gaussian widths fitted to the average of the windows around the
brightest isolated local maxima.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
MAX_CROP = (16, 192, 192)  # the estimate looks at most at this much of the stack (its centre)
CANDIDATES = 200
MIN_SPOTS = 8
WINDOW = (4, 10, 10)  # half-size of the averaged window (z, y, x)
ISOLATION = (3, 6, 6)  # a candidate is kept when no brighter one lies this close on every axis
SIGMA_GRID = tuple(float(v) for v in np.geomspace(0.4, 8.0, 61))
#: Spot σ (voxels) that --spot-size may give: smaller or larger spots would be resampled by a factor of tens or more
#: (``--spot-size 1e-9,1e-9um`` asked for a stack 1e27 times larger and ran out of memory).
SIGMA_LIMITS = (0.2, 64.0)
#: Most memory the resampled copy of a stack may take (its work type); a larger one is refused in one line.
MAX_RESAMPLED_BYTES = 4 * 2**30


@dataclass(frozen=True)
class Scale:
    """What the detector did about spot size: the stack's spot σ (voxels, z/y/x; None: unknown), where it came
    from ("given", "estimated", "unknown"), and the resampling factors applied (output voxels per input voxel;
    None: none)."""

    sigma_zyx: tuple[float, float, float] | None
    source: str
    factors: tuple[float, float, float] | None = None
    spots_measured: int = 0

    def describe(self) -> str:
        if self.sigma_zyx is None:
            return "spot size unknown, not resampled"
        s = f"spot sigma {self.sigma_zyx[0]:.2g},{self.sigma_zyx[1]:.2g} vox (z,xy; {self.source})"
        if self.factors is not None:
            s += ", resampled x" + ",".join(f"{f:.2g}" for f in (self.factors[0], self.factors[1]))
        return s

    def as_dict(self) -> dict:
        return {"sigma_zyx": None if self.sigma_zyx is None else list(self.sigma_zyx), "source": self.source,
                "factors": None if self.factors is None else list(self.factors),
                "spots_measured": self.spots_measured}


def factors_for(sigma_zyx: Sequence[float], nominal: Sequence[float],
                valid: Sequence[Sequence[float]]) -> tuple[float, float, float] | None:
    """Resampling factors that bring spots of ``sigma_zyx`` to the ``nominal`` size, or None when every axis lies
    inside the model's ``valid`` range (``[[lo, hi]] * 3``): the network then sees them as they are."""
    inside = all(lo <= s <= hi for s, (lo, hi) in zip(sigma_zyx, valid))
    if inside:
        return None
    return tuple(float(n) / float(s) for n, s in zip(nominal, sigma_zyx))  # type: ignore[return-value]


def resampled_shape(shape: Sequence[int], factors: Sequence[float]) -> tuple[int, int, int]:
    """Output size: output voxel ``j`` sits at input coordinate ``j / f``, up to the last input voxel."""
    return tuple(int(np.floor((n - 1) * f + 1e-9)) + 1 for n, f in zip(shape, factors))  # type: ignore[return-value]


def resample(volume: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Linear interpolation of ``volume`` onto the grid ``j / f`` (float32, or float64 for wide inputs).

    Down-sampling (f < 1) first averages over ``round(1 / f)`` voxels along that axis, so the noise is not
    aliased."""
    from .errors import InputError
    from .normalise import interpolate_along, work_dtype

    dtype = np.dtype(work_dtype(volume.dtype))
    shape = resampled_shape(volume.shape, factors)
    need = float(np.prod(shape, dtype=float)) * dtype.itemsize
    if need > MAX_RESAMPLED_BYTES:
        raise InputError(f"resampling this stack (shape {tuple(volume.shape)}) to the model's spot size "
                         f"(x{','.join(f'{f:.3g}' for f in factors)}) would need {need / 2**30:.3g} GiB; crop the "
                         "stack, check the spot size, or pass spot_size='off'")
    out = np.asarray(volume, dtype)
    for axis, f in enumerate(factors):
        n = out.shape[axis]
        if f == 1.0:
            continue
        width = int(round(1.0 / f)) if f < 1.0 else 1
        if width > 1:  # centred box average over `width` voxels (even: half weight at both ends), edges repeated
            out = _box(out, axis, width)
        m = resampled_shape([n], [f])[0]
        u = np.arange(m) / f
        i0 = np.minimum(np.floor(u).astype(np.int64), max(n - 2, 0))
        out = interpolate_along(out, axis, i0, (u - i0).astype(out.dtype))
    return out


def _box(x: np.ndarray, axis: int, width: int) -> np.ndarray:
    """Centred moving average of ``width`` voxels along ``axis``; an even width spans width + 1 voxels with half
    weight on the two end ones, so that it stays centred. Faces are extended by repeating the edge voxel."""
    h = width // 2
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (h + 1, h + 1)
    c = np.cumsum(np.pad(x, pad, mode="edge"), axis=axis, dtype=np.float64)
    i = np.arange(n) + h + 1  # index of voxel i in the padded array

    def take(k):
        return np.take(c, k, axis=axis)

    total = take(i + h) - take(i - h - 1)  # voxels i-h .. i+h
    if width % 2 == 0:
        p = np.pad(x, pad, mode="edge")
        total = total - 0.5 * (np.take(p, i - h, axis=axis) + np.take(p, i + h, axis=axis))
    return (total / width).astype(x.dtype)


def to_input(coords: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Positions found in the resampled stack, in the input stack's voxels."""
    return np.asarray(coords, np.float64) / np.asarray(factors, np.float64)


def parse_spot_size(text: str, voxel_size_um: Sequence[float] | None,
                    check_range: bool = True) -> tuple[float, float, float]:
    """``--spot-size``: ``Z,XY`` Gaussian σ in voxels; ``Z,XYum`` in µm (needs the voxel size); a ``fwhm=``
    prefix gives full widths at half maximum instead of σ. Returns σ in voxels (z, y, x), refused outside
    :data:`SIGMA_LIMITS` unless ``check_range`` is False (a syntax check before the voxel size is known)."""
    raw = text.strip().lower()
    fwhm = raw.startswith("fwhm=")
    if fwhm:
        raw = raw[5:]
    microns = raw.endswith("um") or raw.endswith("µm")
    if microns:
        raw = raw[:-2]
    try:
        values = [float(v.removesuffix("um")) for v in raw.split(",")]
    except ValueError:
        raise ValueError(f"spot_size needs Z,XY (e.g. 1.7,1.9 voxels or 0.5,0.2um), got {text!r}") from None
    if len(values) != 2 or not all(np.isfinite(values)) or min(values) <= 0:
        raise ValueError(f"spot_size needs two positive sizes Z,XY, got {text!r}")
    z, xy = (v / FWHM_PER_SIGMA for v in values) if fwhm else values
    if microns:
        if voxel_size_um is None:
            raise ValueError(f"spot_size={text!r} is in µm but the stack's voxel size is unknown: give voxel_size_um= "
                             "or the size in voxels")
        z, xy = z / float(voxel_size_um[0]), xy / float(voxel_size_um[2])
    if check_range and not (SIGMA_LIMITS[0] <= z <= SIGMA_LIMITS[1] and SIGMA_LIMITS[0] <= xy <= SIGMA_LIMITS[1]):
        raise ValueError(f"spot_size={text!r} is a σ of {z:.3g},{xy:.3g} voxels; dmdet resamples spots of "
                         f"{SIGMA_LIMITS[0]:g} to {SIGMA_LIMITS[1]:g} voxels to its size (check the units)")
    return float(z), float(xy), float(xy)


def crop_region(shape: Sequence[int], size: Sequence[int] = MAX_CROP) -> tuple[slice, slice, slice]:
    """The centre of a stack, at most ``size`` (default :data:`MAX_CROP`, what :func:`estimate` looks at)."""
    return tuple(slice(max(0, (n - c) // 2), max(0, (n - c) // 2) + min(n, c))  # type: ignore[return-value]
                 for n, c in zip(shape, size))


def _with_neighbours(x: np.ndarray, axis: int, op) -> np.ndarray:
    """``op`` of each voxel and its two neighbours along ``axis`` (edges: the voxel itself stands in)."""
    lo = [slice(None)] * 3
    hi = [slice(None)] * 3
    out = x.copy()
    lo[axis], hi[axis] = slice(None, -1), slice(1, None)
    out[tuple(hi)] = op(out[tuple(hi)], x[tuple(lo)])
    out[tuple(lo)] = op(out[tuple(lo)], x[tuple(hi)])
    return out


def _box3(x: np.ndarray) -> np.ndarray:
    """3x3x3 sum (edges: as if the face voxels were repeated once more)."""
    for axis in range(3):
        x = _with_neighbours(x, axis, np.add)
    return x / 27.0


def _local_max(x: np.ndarray) -> np.ndarray:
    """Voxels equal to the maximum of their 3x3x3 neighbourhood."""
    m = x
    for axis in range(3):
        m = _with_neighbours(m, axis, np.maximum)
    return x >= m


def estimate(normalised: np.ndarray) -> tuple[tuple[float, float, float] | None, int]:
    """Spot σ (voxels, z/y/x, y = x) of a normalised stack (background 0, noise 1), and the spots measured.

    Candidates are the brightest local maxima of a 3x3x3 mean that stand > 1 (five noise sd of that mean) above
    the background, none with a brighter one within :data:`ISOLATION`.
    The candidates' windows are averaged (noise falls with their number) and σ per axis is a Gaussian plus a
    constant fitted to the average's profile along that axis through its centre (:func:`_line_profiles`,
    :func:`_fit_width`). None when fewer than 8
    candidates lie inside the stack with their whole window."""
    x = np.asarray(normalised, np.float32)
    x = x[crop_region(x.shape)]
    if min(x.shape) < 1:
        return None, 0
    s = _box3(x)
    idx = np.argwhere(_local_max(s) & (s > 1.0))
    if len(idx) == 0:
        return None, 0
    order = np.argsort(-s[tuple(idx.T)])
    near = np.asarray(ISOLATION)
    kept = np.empty((CANDIDATES, 3), idx.dtype)
    count = 0
    for i in order:  # brightest first; dropped when a kept one lies within ISOLATION on every axis
        v = idx[i]
        if count == 0 or not (np.abs(kept[:count] - v) <= near).all(axis=1).any():
            kept[count] = v
            count += 1
            if count >= CANDIDATES:
                break
    chosen = list(kept[:count])
    r_max = np.maximum(np.minimum(WINDOW, (np.array(x.shape) - 1) // 2 - 1), 1)  # thin stacks: smaller window
    inner = [c for c in chosen if np.all(c - r_max >= 0) and np.all(c + r_max < x.shape)]
    if len(inner) < MIN_SPOTS:
        return None, len(inner)
    mean = np.mean([x[c[0] - r_max[0]:c[0] + r_max[0] + 1, c[1] - r_max[1]:c[1] + r_max[1] + 1,
                      c[2] - r_max[2]:c[2] + r_max[2] + 1] for c in inner], axis=0)
    sz, sy, sx = (_fit_width(profile) for profile in _line_profiles(mean))
    if sz is None or sy is None or sx is None:
        return None, len(inner)
    xy = 0.5 * (sy + sx)
    return (float(sz), float(xy), float(xy)), len(inner)


def _line_profiles(window: np.ndarray) -> list[np.ndarray]:
    """Profiles of an averaged spot window along z, y and x through its centre, each summed over the 3x3 voxels
    around that line. A spot's profile along a line through it has the same width as its marginal, while the line
    sees far less of the structure around it (a cell's own profile along z made the marginal's fits fail)."""
    c = np.array(window.shape) // 2
    near = [slice(max(k - 1, 0), k + 2) for k in c]
    return [window[:, near[1], near[2]].sum(axis=(1, 2)), window[near[0], :, near[2]].sum(axis=(0, 2)),
            window[near[0], near[1], :].sum(axis=(0, 1))]


def _fit_width(profile: np.ndarray) -> float | None:
    """σ of ``a exp(-g² / 2σ²) + b`` fitted by least squares to a profile centred on its middle (σ on a
    geometric grid, a and b linear), less the 1/12 voxel² of integer alignment; None when no positive fit."""
    r = len(profile) // 2
    g = np.arange(-r, r + 1, dtype=np.float64)
    p = np.asarray(profile, np.float64)
    e = np.exp(-0.5 * (g[None, :] / np.asarray(SIGMA_GRID)[:, None]) ** 2)  # (sigma, position)
    de = e - e.mean(axis=1, keepdims=True)
    dp = p - p.mean()
    spread = (de * de).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (de * dp).sum(axis=1) / spread  # the least-squares a and b of each sigma, in closed form
    cost = ((a[:, None] * de - dp) ** 2).sum(axis=1)
    good = (a > 0) & np.isfinite(cost)
    if not good.any():
        return None
    best = SIGMA_GRID[int(np.argmin(np.where(good, cost, np.inf)))]  # the first of equal costs, as before
    return float(np.sqrt(max(best**2 - 1.0 / 12.0, 0.04)))
