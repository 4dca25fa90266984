"""Detected spots: the CSV's columns as numpy arrays, indexable like one (DESIGN.md, 'Spots CSV')."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

#: Per-spot features that :class:`~dmdet_infer.detector.Detector` measures, in their CSV order (after the
#: coordinates): ``mass``, the photometric mass (the normalised image summed within 2 target sigmas of the spot,
#: less its local background; noise units; NaN where not measured, i.e. below the measure level); ``spread``, the
#: density's largest principal variance around the spot in target-sigma units (about 1 for one particle, more for
#: an elongated blob); ``split``, whether the spot is one half of a blob split into two particles (both halves
#: carry the blob's mass and spread).
FEATURES = ("mass", "spread", "split")


@dataclass(frozen=True)
class Spots:
    """Spot table. Coordinates in voxels (0-based, voxel centres at integers); ``frame`` is None for a 3D input.

    Index it like an array: ``spots[spots.score > 0.9]``, ``spots[:10]`` or ``spots[[0, 3]]`` give a table of
    those spots (with the same ``meta``); ``len(spots)``; ``spots.to_dataframe()`` (pandas, imported only then)
    and ``spots.to_records()`` (a numpy structured array) hold the CSV's columns.

    Examples
    --------
    >>> import numpy as np
    >>> s = Spots(np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([5.0, 6.0]), np.array([0.9, 0.4]),
    ...           np.array([100.0, 20.0]), meta={"threshold": 0.3})
    >>> bright = s[s.score > 0.5]
    >>> len(bright), bright.meta["threshold"], bright.to_records()["x"].tolist()
    (1, 0.3, [5.0])
    """

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
    #: Per-spot features (:data:`FEATURES`), one array each, empty when none were measured.
    features: dict[str, np.ndarray] = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def __getitem__(self, key: Any) -> Spots:
        """The spots selected by a boolean mask, a slice, an integer or an array of integers."""
        if isinstance(key, str):
            raise TypeError(f"index spots by mask, slice or integers; for the column use spots.{key} "
                            f"or spots.columns()[{key!r}]")
        if isinstance(key, (int, np.integer)):
            key = [int(key)]
        if not isinstance(key, slice):
            key = np.asarray(key)
            if key.dtype == bool and key.shape != (len(self),):
                raise IndexError(f"boolean index of shape {key.shape} for {len(self)} spots")
            if key.dtype != bool and key.size and key.dtype.kind not in "iu":
                raise IndexError(f"spots are indexed by a boolean mask, a slice or integers, not {key.dtype}")
            if key.dtype != bool:
                key = key.astype(np.intp)

        return replace(self, z=self.z[key], y=self.y[key], x=self.x[key], score=self.score[key],
                       intensity=self.intensity[key], frame=None if self.frame is None else self.frame[key],
                       features={k: v[key] for k, v in self.features.items()})

    @property
    def zyx(self) -> np.ndarray:
        """Positions as an (N, 3) float64 array."""
        return np.stack([self.z, self.y, self.x], axis=1).astype(np.float64, copy=False)

    def columns(self) -> dict[str, np.ndarray]:
        """CSV columns in order: ``[frame,] z, y, x, score, intensity[, z_um, y_um, x_um]``, then the features
        (:data:`FEATURES`) that were measured."""
        cols: dict[str, np.ndarray] = {}
        if self.frame is not None:
            cols["frame"] = self.frame
        cols.update(z=self.z, y=self.y, x=self.x, score=self.score, intensity=self.intensity)
        if self.voxel_size_um is not None:
            for name, values, size in zip(("z_um", "y_um", "x_um"), (self.z, self.y, self.x), self.voxel_size_um):
                cols[name] = values * size
        cols.update((k, self.features[k]) for k in FEATURES if k in self.features)
        cols.update((k, v) for k, v in self.features.items() if k not in FEATURES)
        return cols

    def to_records(self) -> np.ndarray:
        """The columns (:meth:`columns`) as a numpy structured array, one record per spot."""
        cols = self.columns()
        out = np.zeros(len(self), dtype=[(k, np.asarray(v).dtype) for k, v in cols.items()])
        for k, v in cols.items():
            out[k] = v
        return out

    def to_dataframe(self):
        """The columns (:meth:`columns`) as a pandas DataFrame (pandas is imported here, it is not a
        dependency); ``meta`` goes to ``DataFrame.attrs["meta"]``."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("Spots.to_dataframe needs pandas: pip install pandas") from exc
        frame = pd.DataFrame(self.columns())
        frame.attrs["meta"] = dict(self.meta)
        return frame

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the CSV atomically."""
        from .io import write_spots_csv

        write_spots_csv(path, self.columns())

    @classmethod
    def empty(cls, voxel_size_um: tuple[float, float, float] | None = None,
              meta: dict[str, Any] | None = None) -> Spots:
        """No spot, with the (empty) feature columns, so that a CSV of no spot has the same header as one with
        spots."""
        e = np.zeros(0, np.float64)
        return cls(e, e, e, np.zeros(0, np.float32), np.zeros(0, np.float32),
                   None, voxel_size_um, dict(meta or {}),
                   {"mass": e, "spread": e, "split": np.zeros(0, bool)})

    @classmethod
    def concat(cls, parts: Sequence[Spots]) -> Spots:
        """Stack tables (e.g. the frames of a time-lapse)."""
        if not parts:
            return cls.empty()
        z, y, x, score, intensity = (np.concatenate([getattr(p, n) for p in parts])
                                     for n in ("z", "y", "x", "score", "intensity"))
        frames = [p.frame for p in parts if p.frame is not None]
        return cls(
            z, y, x, score, intensity,
            frame=np.concatenate(frames) if len(frames) == len(parts) else None,
            voxel_size_um=parts[0].voxel_size_um,
            meta={"frames": [p.meta for p in parts]},
            features=({k: np.concatenate([p.features[k] for p in parts]) for k in parts[0].features}
                      if all(p.features.keys() == parts[0].features.keys() for p in parts) else {}),
        )

    def with_frame(self, index: int) -> Spots:
        """The same spots tagged with a frame index."""
        return replace(self, frame=np.full(len(self), index, np.int64))

