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
    """Spot table: the CSV's columns as numpy arrays, one entry per spot.

    Index it like an array: ``spots[spots.score > 0.9]``, ``spots[:10]`` or ``spots[[0, 3]]`` give a table of
    those spots (with the same ``meta``); ``len(spots)``; ``spots.to_dataframe()`` (pandas, imported only then)
    and ``spots.to_records()`` (a numpy structured array) hold the CSV's columns.

    Parameters
    ----------
    z, y, x : numpy.ndarray
        Coordinates in voxels (0-based, voxel centres at integers).
    score : numpy.ndarray
        The density map's value at each spot (float32).
    intensity : numpy.ndarray
        The raw voxel value at each spot (float32).
    frame : numpy.ndarray or None, optional
        Frame index of each spot (int64); None for a 3D input.
    voxel_size_um : tuple of 3 floats or None, optional
        Voxel size (z, y, x) in µm; when given, :meth:`columns` adds the ``z_um``, ``y_um``, ``x_um`` columns.
    meta : dict, optional
        How the spots were found: ``threshold`` (the score cut used), ``mass_cut`` (photometric mass cut, or
        None), ``threshold_mode`` ("fixed", "auto", or "auto: nothing stands out"), ``normalisation``,
        ``model``, ``runtime`` (what ran the network: "openvino" or "onnxruntime"), ``precision`` (its
        arithmetic: "fp32", "bf16" or "fp16"); for several frames, ``frames`` holds each frame's meta. Not compared
        by ``==``.
    features : dict of str to numpy.ndarray, optional
        Per-spot features (:data:`FEATURES`), one array each, empty when none were measured. Not compared by
        ``==``.

    See Also
    --------
    dmdet_infer.Detector.detect : what makes a table of spots.

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
    #: None), ``threshold_mode`` ("fixed", "auto", or "auto: nothing stands out"), ``normalisation``, ``model``,
    #: ``runtime``, ``precision``; for several frames, ``frames`` holds each frame's meta.
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    #: Per-spot features (:data:`FEATURES`), one array each, empty when none were measured.
    features: dict[str, np.ndarray] = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def __getitem__(self, key: Any) -> Spots:
        """The spots selected by a boolean mask, a slice, an integer or an array of integers.

        Parameters
        ----------
        key : array_like of bool, slice, int or array_like of int
            A boolean mask of one value per spot, a slice, one index or several.

        Returns
        -------
        Spots
            A table of the selected spots, with every column, the features and the same ``meta`` (an integer
            gives a table of one spot).

        Raises
        ------
        TypeError
            For a string: a column is ``spots.score`` or ``spots.columns()["score"]``, not ``spots["score"]``.
        IndexError
            For a boolean mask of the wrong shape, or an array of anything but integers or booleans.

        Examples
        --------
        >>> import numpy as np
        >>> s = Spots(np.arange(4.0), np.zeros(4), np.zeros(4), np.array([0.2, 0.9, 0.5, 0.8], np.float32),
        ...           np.ones(4, np.float32))
        >>> s[s.score > 0.6].z.tolist(), s[1:3].z.tolist(), s[-1].z.tolist(), s[[3, 0]].z.tolist()
        ([1.0, 3.0], [1.0, 2.0], [3.0], [3.0, 0.0])
        """
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
        """Positions as an (N, 3) float64 array of (z, y, x) rows.

        Examples
        --------
        >>> import numpy as np
        >>> Spots(np.array([1.0]), np.array([2.0]), np.array([3.0]), np.ones(1), np.ones(1)).zyx
        array([[1., 2., 3.]])
        """
        return np.stack([self.z, self.y, self.x], axis=1).astype(np.float64, copy=False)

    def columns(self) -> dict[str, np.ndarray]:
        """The CSV's columns, by name, in order.

        Returns
        -------
        dict of str to numpy.ndarray
            ``[frame,] z, y, x, score, intensity[, z_um, y_um, x_um]``, then the features (:data:`FEATURES`) that
            were measured, then any other features. ``frame`` is there when the spots have one; the µm columns
            when ``voxel_size_um`` is known (the voxel coordinates times the voxel size).

        Examples
        --------
        >>> import numpy as np
        >>> s = Spots(np.array([2.0]), np.array([10.0]), np.array([4.0]), np.ones(1), np.ones(1),
        ...           voxel_size_um=(0.3, 0.1, 0.1))
        >>> {name: round(float(v[0]), 3) for name, v in s.columns().items()}
        {'z': 2.0, 'y': 10.0, 'x': 4.0, 'score': 1.0, 'intensity': 1.0, 'z_um': 0.6, 'y_um': 1.0, 'x_um': 0.4}
        """
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
        """The columns (:meth:`columns`) as a numpy structured array, one record per spot.

        Returns
        -------
        numpy.ndarray
            A structured array of ``len(spots)`` records whose fields are the columns, with their dtypes.

        Examples
        --------
        >>> import numpy as np
        >>> s = Spots(np.array([1.0, 2.0]), np.zeros(2), np.array([5.0, 6.0]), np.ones(2, np.float32),
        ...           np.ones(2, np.float32))
        >>> r = s.to_records()
        >>> r.dtype.names, r["x"].tolist()
        (('z', 'y', 'x', 'score', 'intensity'), [5.0, 6.0])
        """
        cols = self.columns()
        out = np.zeros(len(self), dtype=[(k, np.asarray(v).dtype) for k, v in cols.items()])
        for k, v in cols.items():
            out[k] = v
        return out

    def to_dataframe(self):
        """The columns (:meth:`columns`) as a pandas DataFrame.

        pandas is imported here; it is not a dependency of dmdet.

        Returns
        -------
        pandas.DataFrame
            One row per spot, one column per CSV column; ``meta`` goes to ``DataFrame.attrs["meta"]``.

        Raises
        ------
        ImportError
            When pandas is not installed.

        Examples
        --------
        The lines below are skipped under doctest, as pandas may be missing there:

        >>> import numpy as np
        >>> s = Spots(np.array([1.0]), np.zeros(1), np.zeros(1), np.ones(1), np.ones(1), meta={"threshold": 0.5})
        >>> df = s.to_dataframe()  # doctest: +SKIP
        >>> list(df.columns), df.attrs["meta"]  # doctest: +SKIP
        (['z', 'y', 'x', 'score', 'intensity'], {'threshold': 0.5})
        """
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("Spots.to_dataframe needs pandas: pip install pandas") from exc
        frame = pd.DataFrame(self.columns())
        frame.attrs["meta"] = dict(self.meta)
        return frame

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the CSV atomically.

        Parameters
        ----------
        path : str or os.PathLike
            The CSV file to write: a header of the :meth:`columns`' names, then one row per spot (coordinates
            with 4 decimals, ``frame``, integer and boolean columns as integers, the others with 6 significant
            digits). It is written to a temporary file beside ``path``, then renamed onto it, so a reader never
            sees half a table.

        Raises
        ------
        InputError
            When ``path``'s folder does not exist, ``path`` is a folder, or the file cannot be written.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> s = Spots(np.array([1.0]), np.array([2.0]), np.array([3.0]), np.ones(1, np.float32),
        ...           np.full(1, 7.0, np.float32))
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     s.to_csv(os.path.join(folder, "spots.csv"))
        ...     with open(os.path.join(folder, "spots.csv")) as f:
        ...         print(f.read().strip())
        z,y,x,score,intensity
        1.0000,2.0000,3.0000,1,7
        """
        from .io import write_spots_csv

        write_spots_csv(path, self.columns())

    @classmethod
    def empty(cls, voxel_size_um: tuple[float, float, float] | None = None,
              meta: dict[str, Any] | None = None) -> Spots:
        """A table of no spot, with the (empty) feature columns.

        So a CSV of no spot has the same header as one with spots.

        Parameters
        ----------
        voxel_size_um : tuple of 3 floats or None, optional
            Voxel size (z, y, x) in µm, as in :class:`Spots`.
        meta : dict or None, optional
            Copied to the table's ``meta``.

        Returns
        -------
        Spots
            No spot; ``features`` holds empty ``mass``, ``spread`` and ``split`` arrays.

        Examples
        --------
        >>> e = Spots.empty(meta={"threshold": 0.5})
        >>> len(e), list(e.columns()), e.meta
        (0, ['z', 'y', 'x', 'score', 'intensity', 'mass', 'spread', 'split'], {'threshold': 0.5})
        """
        e = np.zeros(0, np.float64)
        return cls(e, e, e, np.zeros(0, np.float32), np.zeros(0, np.float32),
                   None, voxel_size_um, dict(meta or {}),
                   {"mass": e, "spread": e, "split": np.zeros(0, bool)})

    @classmethod
    def concat(cls, parts: Sequence[Spots]) -> Spots:
        """Stack tables (e.g. the frames of a time-lapse) into one.

        Parameters
        ----------
        parts : sequence of Spots
            The tables, in order.

        Returns
        -------
        Spots
            All their spots. ``frame`` is kept when every part has one (else None); ``voxel_size_um`` is the first
            part's; ``meta`` is ``{"frames": [each part's meta]}``; the features are kept when all parts have
            the same ones (else none). No part: :meth:`empty`.

        Examples
        --------
        >>> import numpy as np
        >>> a = Spots(np.array([1.0]), np.zeros(1), np.zeros(1), np.ones(1), np.ones(1), meta={"threshold": 0.5})
        >>> both = Spots.concat([a.with_frame(0), a.with_frame(1)])
        >>> len(both), both.frame.tolist(), both.meta
        (2, [0, 1], {'frames': [{'threshold': 0.5}, {'threshold': 0.5}]})
        """
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
        """The same spots tagged with a frame index.

        Parameters
        ----------
        index : int
            The frame index given to every spot.

        Returns
        -------
        Spots
            A copy whose ``frame`` is ``index`` for every spot (int64).

        Examples
        --------
        >>> import numpy as np
        >>> Spots(np.zeros(2), np.zeros(2), np.zeros(2), np.ones(2), np.ones(2)).with_frame(3).frame.tolist()
        [3, 3]
        """
        return replace(self, frame=np.full(len(self), index, np.int64))

