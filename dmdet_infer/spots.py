"""Detected spots: the CSV's columns as numpy arrays (DESIGN.md, 'Spots CSV')."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Spots:
    """Spot table. Coordinates in voxels (0-based, voxel centres at integers); ``frame`` is None for a 3D input."""

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    score: np.ndarray
    intensity: np.ndarray
    frame: np.ndarray | None = None
    voxel_size_um: tuple[float, float, float] | None = None
    #: How the spots were found: ``threshold`` (the score cut used), ``mass_cut`` (photometric mass cut, or
    #: None), ``threshold_mode`` ("fixed", "auto", or "auto: nothing stands out"), ``normalisation``, ``model``;
    #: for several frames, ``frames`` holds each frame's meta.
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return int(self.z.shape[0])

    @property
    def zyx(self) -> np.ndarray:
        """Positions as an (N, 3) float64 array."""
        return np.stack([self.z, self.y, self.x], axis=1).astype(np.float64, copy=False)

    def columns(self) -> dict[str, np.ndarray]:
        """CSV columns in order: ``[frame,] z, y, x, score, intensity[, z_um, y_um, x_um]``."""
        cols: dict[str, np.ndarray] = {}
        if self.frame is not None:
            cols["frame"] = self.frame
        cols.update(z=self.z, y=self.y, x=self.x, score=self.score, intensity=self.intensity)
        if self.voxel_size_um is not None:
            for name, values, size in zip(("z_um", "y_um", "x_um"), (self.z, self.y, self.x), self.voxel_size_um):
                cols[name] = values * size
        return cols

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the CSV atomically."""
        from .io import write_spots_csv

        write_spots_csv(path, self.columns())

    @classmethod
    def empty(cls, voxel_size_um: tuple[float, float, float] | None = None, with_frame: bool = False,
              meta: dict[str, Any] | None = None) -> Spots:
        e = np.zeros(0, np.float64)
        return cls(e, e, e, np.zeros(0, np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int64) if with_frame else None, voxel_size_um, dict(meta or {}))

    @classmethod
    def concat(cls, parts: Sequence[Spots]) -> Spots:
        """Stack tables (e.g. the frames of a time-lapse)."""
        if not parts:
            return cls.empty()
        frames = [p.frame for p in parts]
        return cls(
            *(np.concatenate([getattr(p, n) for p in parts]) for n in ("z", "y", "x", "score", "intensity")),
            frame=None if any(f is None for f in frames) else np.concatenate(frames),
            voxel_size_um=parts[0].voxel_size_um,
            meta={"frames": [p.meta for p in parts]},
        )

    def with_frame(self, index: int) -> Spots:
        """The same spots tagged with a frame index."""
        return replace(self, frame=np.full(len(self), index, np.int64))
