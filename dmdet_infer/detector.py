"""``Detector``: read → normalise → infer (tiled) → find peaks → spots, behind one object.

The CLI, the Python API and embedding in acquisition software all go through this class. One ONNX Runtime
session per Detector, reused for every call; ``detect`` keeps no state between calls, so a Detector can be shared
by several threads.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from . import memory, normalise, pairs, scale, tiling
from . import threshold as autothreshold
from .config import REFINEMENTS as REFINEMENTS  # noqa: F401  (importable from here as before)
from .config import DetectorConfig, Triple, as_triple, check_threshold
from .errors import InputError, where
from .io import Stack, check_finite, release_pages
from .model import Model
from .peaks import find_candidates, suppress
from .peaks import warmup as warmup_peaks
from .spots import Spots

#: A stack whose normalised background is correlated at least this much at 2 voxels
#: (:func:`dmdet_infer.normalise.correlation`) is structured (texture, cells, clipping), not the white noise the
#: noise calibration describes: its automatic threshold does not go below the model's validated one.
STRUCTURED_CORRELATION = 0.1
DECOY_CROP = (32, 192, 192)  #: the part of a stack whose negation :meth:`Detector._decoy` searches
AUTO_MARGIN = 2.0  #: an estimated spot size resamples the stack only beyond the model's range by this factor
OPTIONS = tuple(f.name for f in dataclasses.fields(DetectorConfig))  #: what ``Detector(**options)`` takes


class TileCandidates(NamedTuple):
    """Unsuppressed peaks of one tile's core, in volume coordinates (see :meth:`Detector.tile_candidates`)."""

    coords: np.ndarray  # float64 (N, 3) refined zyx
    voxels: np.ndarray  # int64 (N, 3)
    scores: np.ndarray  # float32 (N,)
    intensity: np.ndarray  # float32 (N,)
    features: np.ndarray  # float64 (N, pairs.N_FEATURES); NaN rows where not measured (see Detector.split_pairs)


def check_volume(volume: np.ndarray, path: object | None = None) -> None:
    """Refuse what the detector cannot use: wrong rank, empty, non-numeric, NaN/Inf."""
    if volume.ndim != 3:
        if volume.ndim == 2:
            raise InputError(where(path, f"2D image (shape {volume.shape}); dmdet is a 3D detector and needs a "
                                   "ZYX stack"))
        raise InputError(where(path, f"expected a 3D ZYX volume, got {volume.ndim} dimensions {volume.shape}"))
    if volume.size == 0:
        raise InputError(where(path, f"empty image (shape {volume.shape})"))
    if volume.dtype.kind not in "uif":
        raise InputError(where(path, f"unsupported data type {volume.dtype}; use integer or float images"))
    if volume.dtype.kind == "f":
        check_finite(volume, path)


class _Negated:
    """Normalisation statistics whose output is negated (the decoy stack of :meth:`Detector._decoy`)."""

    def __init__(self, stats: normalise.Stats) -> None:
        self.stats = stats
        self.constant = stats.constant

    def apply(self, block: np.ndarray, region=None) -> np.ndarray:
        return -self.stats.apply(block, region)


class Detector:
    """Find particles in 3D volumes with a dmdet ONNX model.

    One ONNX Runtime session per Detector, reused for every call; :meth:`detect` keeps no state between calls, so
    a Detector can be shared by several threads.

    Parameters
    ----------
    model : str, os.PathLike, Model or None, optional
        Path to an exported model, a loaded :class:`Model`, or None for the model shipped in the package.
    config : DetectorConfig or None, optional
        The detection options in one object (:class:`dmdet_infer.config.DetectorConfig`, built from the API, the
        command line or a JSON file); None: the defaults. Its ``model`` is used when ``model`` is None.
    **options
        Any field of :class:`~dmdet_infer.config.DetectorConfig` (``device``, ``threshold``, ``min_distance``,
        ``refine``, ``tile``, ``threads``, ``tile_memory``, ``split_pairs``, ``mass_cut``, ``spot_size``,
        ``overlap``; each documented there), overriding ``config``'s. A fixed ``threshold`` is the cut and nothing
        else: which spots are split into pairs and how their masses are measured follow the model
        (:attr:`split_min_score`, :attr:`window_level`), not this number.

    Attributes
    ----------
    config : DetectorConfig
        The options this detector was made with (``model`` set when a path was given).
    auto : bool
        Whether each volume gets its own threshold (:mod:`dmdet_infer.threshold`).
    fixed_threshold : float or None
        The fixed cut: spots score above it. None with the automatic threshold.
    fallback_threshold : float
        The model's tuned threshold (``ModelInfo.threshold``): what the automatic threshold falls back to when no
        spot stands out of the noise, and the lowest it goes without the stack's own evidence.
    split_min_score : float
        Spots scoring at least this are considered for the pair split (:mod:`dmdet_infer.pairs`): the model's
        tuned threshold, whatever ``threshold`` is.
    window_level : float
        Peaks scoring at least this (and the measured peaks, :attr:`measure_level`) bound each spot's measurement
        window (:func:`dmdet_infer.pairs.shape_features`): the model's tuned threshold, whatever ``threshold`` is.
    measure_level : float or None
        Peaks scoring at least this get their photometric mass and shape (see the property).
    search_floor : float
        Peaks are searched above this (see the property).

    Raises
    ------
    InputError
        When the model file is missing or not a valid ONNX model, CUDA is asked for but not active,
        ``threshold`` is not a number in [0, 1) or "auto" ("auto" also needs a calibrated model), or another
        option is invalid (the message names it).
    TypeError
        When an option is not a field of :class:`~dmdet_infer.config.DetectorConfig`.

    See Also
    --------
    Spots : the result.
    read_stack : read a TIFF stack for :meth:`detect_stack`.

    Examples
    --------
    A ZYX volume with two bright spots on Poisson noise:

    >>> import numpy as np
    >>> z, y, x = np.ogrid[:10, :64, :64]
    >>> spot = lambda cz, cy, cx: 60 * np.exp(-(z - cz) ** 2 / 2 - ((y - cy) ** 2 + (x - cx) ** 2) / 4.5)
    >>> volume = np.random.default_rng(0).poisson(10 + spot(5, 20, 20) + spot(4, 40, 45)).astype(np.uint16)
    >>> detector = Detector()
    >>> spots = detector.detect(volume)
    >>> len(spots), sorted(spots.zyx.round().astype(int).tolist()), spots.meta["threshold_mode"]
    (2, [[4, 40, 45], [5, 20, 20]], 'auto')
    >>> fixed = Detector(threshold=0.5).detect(volume)
    >>> len(fixed), fixed.meta["threshold"], fixed.meta["threshold_mode"]
    (2, 0.5, 'fixed')
    >>> Detector(threshold=1.5)
    Traceback (most recent call last):
    ...
    dmdet_infer.errors.InputError: threshold must be in [0, 1) (the density map is a sigmoid output), got 1.5

    The threshold's jobs, each from the model's metadata; a fixed ``threshold`` changes the cut only:

    >>> auto, fixed = Detector(), Detector(threshold=0.3)
    >>> auto.fixed_threshold, auto.fallback_threshold, auto.split_min_score, auto.window_level
    (None, 0.66, 0.66, 0.66)
    >>> auto.measure_level, auto.search_floor
    (0.5, 0.05)
    >>> fixed.fixed_threshold, fixed.split_min_score, fixed.window_level, fixed.measure_level, fixed.search_floor
    (0.3, 0.66, 0.66, 0.66, 0.3)
    """

    def __init__(
        self,
        model: str | os.PathLike | Model | None = None,
        *,
        config: DetectorConfig | None = None,
        **options: Any,
    ) -> None:
        unknown = [name for name in options if name not in OPTIONS]
        if unknown:
            raise TypeError(f"Detector() got an unexpected keyword argument {unknown[0]!r}; the options are the "
                            f"fields of DetectorConfig: {', '.join(OPTIONS)}")
        if config is None:
            config = DetectorConfig(**options)
        elif options:
            config = config.replace(**options)
        if model is not None and not isinstance(model, Model):
            config = config.replace(model=model)
        self.config = config
        self.model = model if isinstance(model, Model) else Model(config.model, device=config.device,
                                                                   threads=config.threads, runtime=config.runtime,
                                                                   precision=config.precision)
        self.overlap = self.model.on_cuda if config.overlap is None else config.overlap
        info = self.model.info
        threshold = config.threshold
        self.auto = threshold == "auto" or (threshold is None and info.noise_peaks is not None)
        if self.auto and info.noise_peaks is None:
            raise InputError("threshold='auto' needs a model with a noise calibration (dmdet.noise_peaks); this "
                             "model has none: re-export it with python -m export, or give a number")
        self.fixed_threshold: float | None = None if self.auto else check_threshold(
            info.threshold if threshold is None else threshold)
        self.fallback_threshold = float(info.threshold)
        self.split_min_score = float(info.threshold)
        self.window_level = float(info.threshold)
        self.min_distance = config.min_distance or as_triple(info.min_distance_zyx, "min_distance")
        self.refine = config.refine
        self.tile = config.tile
        width = info.config.get("width") if isinstance(info.config, dict) else None
        self.max_tile_voxels = memory.tile_voxels(width, self.model.on_cuda, config.tile_memory)
        self.split_pairs = config.split_pairs and info.kind == "density" and info.sigma_zyx is not None
        self.cut = (config.mass_cut and self.auto and autothreshold.has_cut(info.noise_peaks)
                    and info.sigma_zyx is not None)
        #: "auto", None (never resample), σ in voxels, or a text spec in µm resolved with each volume's voxel size
        self.spot_size: Literal["auto"] | Triple | str | None = (None if config.spot_size == "off"
                                                                 else config.spot_size)

    def _model_scale(self) -> tuple[Triple, tuple[tuple[float, float], ...]]:
        """(nominal spot σ, (low, high) per axis) the model works at; models that do not say: their target σ
        (or the challenge's 1.0, 1.5, 1.5) within a factor 4/3."""
        info = self.info
        nominal = info.spot_sigma_zyx or info.sigma_zyx or (1.0, 1.5, 1.5)
        valid = info.spot_sigma_range_zyx or tuple((0.75 * s, 4.0 / 3.0 * s) for s in nominal)
        return tuple(float(v) for v in nominal), tuple((float(a), float(b)) for a, b in valid)  # type: ignore

    def _centre(self, volume, stats: normalise.Stats) -> np.ndarray:
        """The normalised centre of ``volume`` (:func:`scale.crop_region`): what the spot-size estimate and the
        background correlation look at."""
        crop = scale.crop_region(volume.shape)
        return stats.apply(np.asarray(volume[crop]), crop)

    def _scale_for(self, volume, stats: normalise.Stats, centre: np.ndarray | None = None,
                   voxel_size_um: Triple | None = None) -> scale.Scale:
        """The spot size of ``volume`` (given or estimated) and the resampling it needs (:mod:`scale`);
        ``centre``: :meth:`_centre`, when already computed; ``voxel_size_um``: the volume's, for a spot size
        given in µm."""
        if self.spot_size is None:
            return scale.Scale(None, "not asked")
        nominal, valid = self._model_scale()
        sigma: Triple | None
        if isinstance(self.spot_size, str) and self.spot_size != "auto":
            try:
                sigma = scale.parse_spot_size(self.spot_size, voxel_size_um)
            except ValueError as exc:
                raise InputError(str(exc)) from None
            return scale.Scale(sigma, "given", scale.factors_for(sigma, nominal, valid))
        if self.spot_size != "auto":
            given: Triple = self.spot_size  # type: ignore[assignment]  # a triple here
            return scale.Scale(given, "given", scale.factors_for(given, nominal, valid))
        sigma, measured = scale.estimate(self._centre(volume, stats) if centre is None else centre)
        if sigma is None:
            return scale.Scale(None, "estimate: too few spots", None, measured)
        if self.info.spot_sigma_range_zyx is None:  # the model does not say what it was trained on: report only
            return scale.Scale(sigma, "estimated", None, measured)
        wide = [(a / AUTO_MARGIN, b * AUTO_MARGIN) for a, b in valid]
        return scale.Scale(sigma, "estimated", scale.factors_for(sigma, nominal, wide), measured)

    @property
    def threshold(self) -> float:
        """The fixed cut (:attr:`fixed_threshold`), or with 'auto' the fallback (:attr:`fallback_threshold`).

        Kept for code written when one number did all the threshold's jobs; setting it sets that one job only
        (a number in [0, 1))."""
        return self.fallback_threshold if self.fixed_threshold is None else self.fixed_threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        if self.fixed_threshold is None:
            self.fallback_threshold = check_threshold(value)
        else:
            self.fixed_threshold = check_threshold(value)

    @property
    def measure_level(self) -> float | None:
        """Peaks scoring at least this get :func:`pairs.shape_features` (photometric mass and shape, windows
        bounded by the peaks scoring at least :attr:`window_level`); None: no peak is measured.

        With the mass cut, the calibration's level (``dmdet.noise_peaks.measure_level``: the noise peaks' masses
        were measured from it), capped at :attr:`split_min_score` so that every spot the split considers is
        measured; else, with the pair split, :attr:`split_min_score`. The measured peaks also bound each other's
        windows, so this level does not follow a fixed ``threshold``: a spot's mass does not depend on it, and
        with a fixed threshold below the model's, the spots scoring below :attr:`split_min_score` have no mass
        (NaN)."""
        if self.cut:
            return min(self.split_min_score, float(self.info.noise_peaks["measure_level"]))
        return self.split_min_score if self.split_pairs else None

    @property
    def search_floor(self) -> float:
        """Candidates are searched above this: the fixed threshold, or with 'auto' the calibration's lowest
        threshold (:func:`dmdet_infer.threshold.floor`, capped at :attr:`fallback_threshold`), each volume's
        threshold being chosen among them."""
        if self.fixed_threshold is None:
            return min(self.fallback_threshold, autothreshold.floor(self.info.noise_peaks))
        return self.fixed_threshold

    @property
    def search_threshold(self) -> float:
        """:attr:`search_floor` (the name before the threshold's jobs were separated)."""
        return self.search_floor

    @property
    def info(self):
        """The model's metadata (:class:`dmdet_infer.metadata.ModelInfo`)."""
        return self.model.info

    def warmup(self) -> None:
        """Compile the peak finder and run the network once, so that the first real call is fast.

        Optional: without it, the first :meth:`detect` does the same work (and is slower than the next ones).

        Returns
        -------
        None

        Examples
        --------
        >>> detector = Detector()
        >>> detector.warmup()
        >>> len(detector.detect(np.zeros((10, 64, 64), np.float32)))  # a constant volume: nothing to detect
        0
        """
        stride = self.info.stride_zyx
        block = np.zeros(tuple(max(s, 1) * k for s, k in zip(stride, (4, 16, 16))), np.float32)
        self.model.run(block)
        warmup_peaks()

    def stats(self, volume) -> normalise.Stats:
        """The normalisation statistics of a whole volume, as the model was trained (:mod:`normalise`).

        Computed once per volume; what :meth:`tile_candidates` needs for each of its tiles (a dask worker computes
        them once per frame, :mod:`dmdet_infer.distributed`).

        Parameters
        ----------
        volume : array_like
            The ZYX volume: a numpy array, memmap or lazy array (read block by block).

        Returns
        -------
        normalise.Stats
            Background offset and noise scale on a coarse grid of blocks (the model's ``normalisation``);
            ``constant`` is True when the volume is constant (nothing to detect); ``apply`` normalises a block.

        Examples
        --------
        >>> volume = np.random.default_rng(0).poisson(10, (10, 64, 64)).astype(np.uint16)
        >>> stats = Detector().stats(volume)
        >>> stats.constant, stats.block, float(stats.offset.mean())
        (False, (8, 32, 32), 10.0)
        >>> stats.apply(volume).dtype, float(np.median(stats.apply(volume)))
        (dtype('float32'), 0.0)
        >>> Detector().stats(np.zeros((10, 64, 64), np.uint16)).constant
        True
        """
        return normalise.stats(volume, self.info.normalisation, self.config.threads)

    def tile_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The core size used for a volume of ``shape``: ``tile`` when given, else from the model and size.

        Parameters
        ----------
        shape : tuple of int
            The volume's shape (z, y, x).

        Returns
        -------
        tuple of int
            The largest core (z, y, x) sent to the network at once (plus the model's halo around it): the
            ``tile`` option when given, else chosen from the model's halo and stride and the memory budget
            (``max_tile_voxels``, :func:`dmdet_infer.tiling.auto_tile`); a small volume is one tile.

        Examples
        --------
        >>> Detector().tile_shape((10, 64, 64)), Detector(tile=(10, 32, 32)).tile_shape((10, 64, 64))
        ((10, 64, 64), (10, 32, 32))
        """
        info = self.info
        return self.tile or tiling.auto_tile(tuple(shape), info.halo_zyx, info.stride_zyx, self.max_tile_voxels)

    def cores(self, shape: tuple[int, ...]) -> list[tiling.Region]:
        """The tile cores covering a volume of ``shape``, in raster order.

        What :meth:`tile_candidates` takes, one core at a time (the dask workers take one each,
        :mod:`dmdet_infer.distributed`).

        Parameters
        ----------
        shape : tuple of int
            The volume's shape (z, y, x).

        Returns
        -------
        list of tuple of slice
            The cores, each a (z, y, x) region at most :meth:`tile_shape`; they do not overlap and cover the
            volume.

        Examples
        --------
        >>> cores = Detector(tile=(10, 32, 32)).cores((10, 64, 64))
        >>> len(cores), cores[1]
        (4, (slice(0, 10, None), slice(0, 32, None), slice(32, 64, None)))
        """
        info = self.info
        return [t.core for t in tiling.plan(tuple(shape), self.tile_shape(shape), info.halo_zyx, info.stride_zyx)]

    def density(self, volume: np.ndarray, path: object | None = None) -> np.ndarray:
        """The network's density map of a whole volume.

        Holds the whole map in memory: :meth:`detect` does not use it (it works tile by tile).

        Parameters
        ----------
        volume : numpy.ndarray
            The ZYX volume.
        path : object or None, optional
            The volume's file, named in error messages.

        Returns
        -------
        numpy.ndarray
            float32, the same shape as ``volume``; zeros for a constant volume.

        Raises
        ------
        InputError
            When ``volume`` is not 3D, empty, not numeric, or holds NaN or infinite values.

        Examples
        --------
        >>> import numpy as np
        >>> z, y, x = np.ogrid[:10, :64, :64]
        >>> spot = lambda cz, cy, cx: 60 * np.exp(-(z - cz) ** 2 / 2 - ((y - cy) ** 2 + (x - cx) ** 2) / 4.5)
        >>> volume = np.random.default_rng(0).poisson(10 + spot(5, 20, 20) + spot(4, 40, 45)).astype(np.uint16)
        >>> density = Detector().density(volume)
        >>> density.shape, density.dtype, bool(density[5, 20, 20] > 0.5 and density[4, 40, 45] > 0.5)
        ((10, 64, 64), dtype('float32'), True)
        """
        check_volume(volume, path)
        stats = self.stats(volume)
        if stats.constant:
            return np.zeros(volume.shape, np.float32)
        stride, halo = self.info.stride_zyx, self.info.halo_zyx
        return tiling.predict(volume, self.model.run, stats.apply,
                              self.tile_shape(volume.shape), halo, stride)

    @staticmethod
    def _margin(level: float | None) -> list[int]:
        """First margin of a tile's density block around its core (see :meth:`tile_candidates`)."""
        return [1, 1, 1] if level is None else [2 * r + 1 for r in pairs.RADIUS]

    def _tile_density(self, volume, core: tiling.Region, stats: normalise.Normaliser,
                      margin: Iterable[int]) -> tuple[tiling.Region, np.ndarray, np.ndarray, np.ndarray | None]:
        """(region, density, raw voxels, normalised voxels or None) of ``core`` grown by ``margin``: the network
        part of a tile (:func:`tiling.predict_region`)."""
        region = tiling.grow(core, tuple(margin), tuple(volume.shape))
        return (region, *tiling.predict_region(volume, self.model.run, stats.apply, region, self.info.halo_zyx,
                                               self.info.stride_zyx))

    def tile_candidates(self, volume, core: tiling.Region, stats: normalise.Normaliser,
                        measure_level: float | None = None, floor: float | None = None,
                        first: tuple[tiling.Region, np.ndarray, np.ndarray, np.ndarray | None] | None = None
                        ) -> TileCandidates:
        """Peaks (before min-distance suppression) whose voxel lies in ``core``, in volume coordinates.

        One tile of :meth:`detect`'s work; :meth:`merge` makes the spots of the whole volume from the
        candidates of all its cores (:mod:`dmdet_infer.distributed` runs one tile per dask task). The density map
        is computed for the core plus a margin of one voxel (enough for the maxima test and the refinement), or
        of twice :data:`pairs.RADIUS` when spots are measured; the margin doubles while a plateau of the core
        reaches the margin's edge. Only this block is in memory.

        Parameters
        ----------
        volume : array_like
            The whole ZYX volume (a numpy array, memmap or lazy array: only the tile's block is read).
        core : tuple of slice
            The core, one of :meth:`cores` of the volume's shape.
        stats : normalise.Normaliser
            :meth:`stats` of the whole volume.
        measure_level : float or None, optional
            Peaks scoring at least this get :func:`pairs.shape_features` (photometric mass and shape), their
            windows bounded by the peaks scoring at least :attr:`window_level`; the others NaN. Default:
            :attr:`measure_level`.
        floor : float or None, optional
            Peaks scoring above this are found; default :attr:`search_floor` (with a fixed threshold, the
            threshold: the cut is made here, not in :meth:`merge`).
        first : tuple or None, optional
            ``(region, density, raw voxels, normalised voxels or None)`` of the core grown by the first margin
            (:meth:`_tile_density`), when already computed (:attr:`overlap`); None: computed here.

        Returns
        -------
        TileCandidates
            The peaks' refined positions ``coords`` and their ``voxels`` (volume coordinates), ``scores``
            (density), raw ``intensity`` and ``features`` (:func:`pairs.shape_features`, NaN rows where not
            measured).

        Examples
        --------
        >>> z, y, x = np.ogrid[:10, :64, :64]
        >>> spot = lambda cz, cy, cx: 60 * np.exp(-(z - cz) ** 2 / 2 - ((y - cy) ** 2 + (x - cx) ** 2) / 4.5)
        >>> volume = np.random.default_rng(0).poisson(10 + spot(5, 20, 20) + spot(4, 40, 45)).astype(np.uint16)
        >>> detector = Detector(tile=(10, 32, 64))  # two cores: y 0-32 and 32-64
        >>> stats = detector.stats(volume)
        >>> parts = [detector.tile_candidates(volume, core, stats) for core in detector.cores(volume.shape)]
        >>> [p.voxels[p.scores.argmax()].tolist() for p in parts]  # the best peak of each core
        [[5, 20, 20], [4, 40, 45]]
        >>> spots = detector.merge(parts, n_voxels=volume.size)
        >>> sorted(spots.zyx.round().astype(int).tolist())
        [[4, 40, 45], [5, 20, 20]]
        """
        shape = tuple(volume.shape)
        info = self.info
        level = self.measure_level if measure_level is None else measure_level
        margin = self._margin(level)
        measuring = level is not None and info.sigma_zyx is not None  # shape features, their windows' seeds
        while True:
            if first is not None:
                region, density, raw, normalised = first
                first = None
            else:
                region, density, raw, normalised = self._tile_density(volume, core, stats, margin)
            local = tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(core, region))
            faces = tuple((r.start > 0, r.stop < n) for r, n in zip(region, shape))
            found = find_candidates(density, self.search_floor if floor is None else floor, self.refine, local,
                                    faces, self.window_level if measuring else None)
            if not found.unresolved:
                break
            margin = [min(2 * m, n) for m, n in zip(margin, shape)]
        origin = np.array([r.start for r in region], np.int64)
        v = found.voxels
        intensity = np.asarray(raw[v[:, 0], v[:, 1], v[:, 2]], dtype=np.float32)
        features = np.full((len(v), pairs.N_FEATURES), np.nan)
        if found.seeds is not None:  # measuring: the whole block's spots bound each measured spot's window
            measured = found.scores >= level
            if normalised is None:  # the network's input had a halo: normalised again, the region only
                normalised = stats.apply(raw, region)
            f = pairs.shape_features(density, normalised, v[measured], found.coords[measured], found.seeds,
                                     info.sigma_zyx, self.config.threads)
            f[:, 0:3] += origin
            features[measured] = f
        return TileCandidates(found.coords + origin, v + origin, found.scores, intensity, features)

    def merge(self, parts: Iterable[TileCandidates], voxel_size_um: Iterable[float] | None = None,
              n_voxels: int | None = None, decoy=None, structured: bool = False) -> Spots:
        """One spot table from the candidates of all tiles of one volume.

        Global greedy min-distance suppression, best first (the same spots as ``find_peaks`` on the whole density
        map), then, with the automatic threshold, the volume's own threshold
        (:func:`dmdet_infer.threshold.choose_cut`), then the pair split (:attr:`split_pairs`). What :meth:`detect`
        does after its tiles; the dask client does it with the tiles its workers found
        (:mod:`dmdet_infer.distributed`).

        Parameters
        ----------
        parts : iterable of TileCandidates
            :meth:`tile_candidates` of every core of the volume (:meth:`cores`), with this detector's search floor
            (a fixed threshold cuts there, not here).
        voxel_size_um : sequence of 3 floats or None, optional
            Voxel size (z, y, x) in µm; the spots then have µm columns.
        n_voxels : int or None, optional
            The volume's voxel count, which the automatic threshold needs (its noise rates are per voxel).
        decoy : callable or None, optional
            A function giving the negated stack's peaks (scores, photometric masses, voxels searched;
            :meth:`_decoy`), called only when the automatic threshold would go below the model's; None: the
            threshold stays at or above the model's.
        structured : bool, optional
            The stack's background is structured (correlated), so the cut stays at or above the model's threshold
            for structured stacks (``dmdet.noise_peaks.structured_threshold``).

        Returns
        -------
        Spots
            The spots, best first; ``meta`` holds the threshold used (and with 'auto', the mass cut and whether
            the negated stack was checked).

        Raises
        ------
        ValueError
            With the automatic threshold, when ``n_voxels`` is None.
        InputError
            When ``voxel_size_um`` is not one or three finite values >= 0.

        Examples
        --------
        >>> z, y, x = np.ogrid[:10, :64, :64]
        >>> spot = lambda cz, cy, cx: 60 * np.exp(-(z - cz) ** 2 / 2 - ((y - cy) ** 2 + (x - cx) ** 2) / 4.5)
        >>> volume = np.random.default_rng(0).poisson(10 + spot(5, 20, 20) + spot(4, 40, 45)).astype(np.uint16)
        >>> detector = Detector()
        >>> stats = detector.stats(volume)
        >>> parts = [detector.tile_candidates(volume, core, stats) for core in detector.cores(volume.shape)]
        >>> spots = detector.merge(parts, (0.3, 0.1, 0.1), n_voxels=volume.size)
        >>> len(spots), sorted(spots.zyx.round().astype(int).tolist()), spots.meta["threshold_mode"]
        (2, [[4, 40, 45], [5, 20, 20]], 'auto')
        >>> detector.merge(parts)
        Traceback (most recent call last):
        ...
        ValueError: merge needs n_voxels with the automatic threshold
        """
        size = None if voxel_size_um is None else as_triple(voxel_size_um, "voxel size")
        parts = list(parts)
        meta = self._meta()
        if not parts:
            return Spots.empty(size, meta=meta)
        coords, voxels, scores, intensity, features = (np.concatenate(a) for a in zip(*parts))
        features = features.reshape(-1, pairs.N_FEATURES)
        keep = suppress(voxels.reshape(-1, 3), scores, self.min_distance)
        if self.auto:
            if n_voxels is None:
                raise ValueError("merge needs n_voxels with the automatic threshold")
            cal = self.info.noise_peaks
            a = -np.inf
            floor = self.fallback_threshold
            if structured:
                floor = max(floor, float(cal.get("structured_threshold", 0.0)))
            used: list[bool] = []

            def checked():  # records whether the threshold rule needed the negated stack
                used.append(True)
                return decoy()

            check = None if decoy is None else checked
            if self.cut:
                mass = features[keep, pairs.PHOTONS]
                t, a = autothreshold.choose_cut(scores[keep], mass, n_voxels, cal, floor, check, structured)
                keep = keep[(scores[keep] > t) & ~(mass <= a)]  # NaN (not measured) passes the mass cut
            else:
                t = autothreshold.choose(scores[keep], n_voxels, cal, floor, check, structured)
                keep = keep[scores[keep] > t]
            meta.update(threshold=t if np.isfinite(t) else None, mass_cut=a if np.isfinite(a) else None,
                        negated_stack_checked=bool(used))
            if not np.isfinite(t):
                meta["threshold_mode"] = "auto: nothing stands out"
        c = coords.reshape(-1, 3)[keep]
        source = np.arange(keep.size)
        if self.split_pairs:
            f = np.where((scores[keep] >= self.split_min_score)[:, None], features[keep], np.nan)
            source, c = pairs.split(c, f, self.info.sigma_zyx)
        split = np.zeros(source.size, bool)
        twin = np.diff(source) == 0  # a split spot gives two consecutive rows from one source
        split[:-1] |= twin
        split[1:] |= twin
        f = features[keep[source]]
        measured = {"mass": f[:, pairs.PHOTONS].astype(np.float64), "spread": f[:, pairs.L1].astype(np.float64),
                    "split": split}
        keep = keep[source]
        return Spots(c[:, 0].copy(), c[:, 1].copy(), c[:, 2].copy(), scores[keep], intensity[keep], None, size,
                     meta, measured)

    def _meta(self) -> dict:
        """What :meth:`merge` records in ``Spots.meta`` before the volume's own threshold is known."""
        info = self.info
        return {"threshold": self.fixed_threshold, "mass_cut": None,
                "threshold_mode": "auto" if self.auto else "fixed", "normalisation": dict(info.normalisation),
                "model": info.name, "runtime": self.model.runtime,
                "precision": self.model.precision}

    def candidates(self, volume: np.ndarray, floor: float = autothreshold.GRID[0],
                   measure_level: float = autothreshold.MEASURE_LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """Scores and photometric masses of all peaks above a low floor, after min-distance suppression.

        What :func:`dmdet_infer.threshold.calibrate` counts on noise volumes.

        Parameters
        ----------
        volume : numpy.ndarray
            The ZYX volume.
        floor : float, optional
            Peaks scoring above this are kept; default 0.05, the lowest threshold of the automatic threshold's
            grid (:data:`dmdet_infer.threshold.GRID`).
        measure_level : float, optional
            Peaks scoring at least this get their photometric mass (windows bounded by the peaks scoring at
            least :attr:`window_level`); default 0.5 (:data:`dmdet_infer.threshold.MEASURE_LEVEL`).

        Returns
        -------
        scores : numpy.ndarray
            float32, best first.
        photons : numpy.ndarray
            The photometric mass of each peak, NaN for those below ``measure_level``.

        Raises
        ------
        InputError
            When ``volume`` is not 3D, empty, not numeric, or holds NaN or infinite values.

        Examples
        --------
        >>> import numpy as np
        >>> z, y, x = np.ogrid[:10, :64, :64]
        >>> spot = lambda cz, cy, cx: 60 * np.exp(-(z - cz) ** 2 / 2 - ((y - cy) ** 2 + (x - cx) ** 2) / 4.5)
        >>> volume = np.random.default_rng(0).poisson(10 + spot(5, 20, 20) + spot(4, 40, 45)).astype(np.uint16)
        >>> scores, photons = Detector().candidates(volume)
        >>> int((scores > 0.9).sum()), bool(np.isnan(photons[scores < 0.5]).all()), bool((photons[:2] > 100).all())
        (2, True, True)
        """
        check_volume(volume)
        stats = self.stats(volume)
        if stats.constant:
            return np.zeros(0, np.float32), np.zeros(0)
        parts = [self.tile_candidates(volume, core, stats, measure_level, floor) for core in self.cores(volume.shape)]
        _, voxels, scores, _, features = (np.concatenate(a) for a in zip(*parts))
        keep = suppress(voxels.reshape(-1, 3), scores, self.min_distance)
        return scores[keep], features.reshape(-1, pairs.N_FEATURES)[keep, pairs.PHOTONS]

    def detect(
        self,
        volume: np.ndarray,
        voxel_size_um: Iterable[float] | None = None,
        *,
        path: object | None = None,
        progress=None,
    ) -> Spots:
        """Spots of one ZYX volume.

        Memory is bounded by the tile size: each tile's density is searched for peaks and dropped.

        Parameters
        ----------
        volume : array_like
            The ZYX volume: a numpy array, memmap, or a lazy array such as zarr/dask (read tile by tile);
            anything else goes through ``numpy.asarray``.
        voxel_size_um : sequence of 3 floats or None, optional
            Voxel size (z, y, x) in µm; the spots then have µm columns.
        path : object or None, optional
            The volume's file, named in error messages.
        progress : object or None, optional
            Anything with ``update(n)``; advanced by one per tile.

        Returns
        -------
        Spots
            The spots, best first, with their features; ``meta`` says how they were found (threshold, mass cut,
            threshold mode, normalisation, model, the spot size used in ``scale``, ``background_correlation``).

        Raises
        ------
        InputError
            When ``volume`` is not 3D, empty, not numeric, or holds NaN or infinite values, or the voxel size is
            not one or three finite values >= 0.

        Examples
        --------
        >>> import numpy as np
        >>> z, y, x = np.ogrid[:10, :64, :64]
        >>> spot = lambda cz, cy, cx: 60 * np.exp(-(z - cz) ** 2 / 2 - ((y - cy) ** 2 + (x - cx) ** 2) / 4.5)
        >>> volume = np.random.default_rng(0).poisson(10 + spot(5, 20, 20) + spot(4, 40, 45)).astype(np.uint16)
        >>> spots = Detector().detect(volume, voxel_size_um=(0.3, 0.1, 0.1))
        >>> len(spots), sorted(spots.zyx.round().astype(int).tolist())
        (2, [[4, 40, 45], [5, 20, 20]])
        >>> list(spots.columns())
        ['z', 'y', 'x', 'score', 'intensity', 'z_um', 'y_um', 'x_um', 'mass', 'spread', 'split']
        >>> bool(np.all(spots.score > spots.meta["threshold"]))
        True
        """
        if not all(hasattr(volume, a) for a in ("shape", "dtype", "__getitem__")):
            volume = np.asarray(volume)
        size = None if voxel_size_um is None else as_triple(voxel_size_um, "voxel size")
        check_volume(volume, path)
        stats = self.stats(volume)
        cores = self.cores(volume.shape)
        if stats.constant:
            if progress is not None:
                progress.update(len(cores))
            return Spots.empty(size, meta={**self._meta(), "threshold_mode": "constant image: nothing to detect"})
        centre = self._centre(volume, stats) if self.auto or self.spot_size == "auto" else None
        try:
            found = self._scale_for(volume, stats, centre, size)
        except InputError as exc:
            raise InputError(where(path, str(exc))) from None
        if found.factors is not None:  # resample to the model's spot size, detect, map the positions back
            spots = self._detect_resampled(scale.resample(volume, found.factors), size, progress, cores)
            c = scale.to_input(spots.zyx, found.factors)
            keep = np.all((c > -0.5) & (c < np.asarray(volume.shape) - 0.5), axis=1)
            return dataclasses.replace(spots[keep], z=c[keep, 0], y=c[keep, 1], x=c[keep, 2],
                                       meta={**spots.meta, "scale": found.as_dict()})
        spots = self._detect_resampled(volume, size, progress, cores, stats, centre)
        return dataclasses.replace(spots, meta={**spots.meta, "scale": found.as_dict()})

    def _detect_resampled(self, volume, size, progress, planned: list, stats: normalise.Stats | None = None,
                          centre: np.ndarray | None = None) -> Spots:
        """Tiles -> candidates -> spots of a volume at the model's scale (``planned``: the cores the progress
        was sized for; a resampled volume's progress is spread over them; ``stats``, ``centre``: this volume's,
        when already computed)."""
        stats = self.stats(volume) if stats is None else stats
        cores = self._by_block_shape(self.cores(volume.shape), volume.shape)
        if stats.constant:
            return Spots.empty(size, meta={**self._meta(), "threshold_mode": "constant image: nothing to detect"})
        step = len(planned) / max(len(cores), 1)

        def parts() -> Iterator[TileCandidates]:
            done = 0.0
            for found in self._tiles(volume, cores, stats):
                yield found
                release_pages(volume)  # a memmapped input must not pile up in resident memory
                if progress is not None:
                    progress.update(int(done + step) - int(done))
                    done += step

        if self.auto and centre is None:
            centre = self._centre(volume, stats)
        r = normalise.correlation(centre) if self.auto and centre is not None else 0.0
        structured = r >= STRUCTURED_CORRELATION
        decoy = None if structured else (lambda: self._decoy(volume, stats))
        spots = self.merge(parts(), size, int(np.prod(volume.shape)), decoy, structured)
        return dataclasses.replace(spots, meta={**spots.meta, "background_correlation": round(r, 4)})

    def _by_block_shape(self, cores: list[tiling.Region], shape: tuple[int, ...]) -> list[tiling.Region]:
        """``cores`` with those whose network blocks have the same shape next to each other (raster order within
        a shape): OpenVINO compiles the network once per block shape and keeps the working memory of one shape
        at a time (:class:`dmdet_infer.model.OpenVINONetwork`). The spots do not depend on the order."""
        margin = self._margin(self.measure_level)
        info = self.info

        def block(core: tiling.Region) -> tuple[int, ...]:
            read = tiling.read_window(tiling.grow(core, margin, shape), shape, info.halo_zyx, info.stride_zyx)
            return tuple(r.stop - r.start for r in read)

        return sorted(cores, key=block)

    def _tiles(self, volume, cores: list[tiling.Region], stats: normalise.Stats) -> Iterator[TileCandidates]:
        """:meth:`tile_candidates` of each core in turn; with :attr:`overlap`, the network part of core k+1
        (:meth:`_tile_density`) runs in a worker thread while the peaks of core k are found here."""
        if not self.overlap or len(cores) < 2:
            for core in cores:
                yield self.tile_candidates(volume, core, stats)
            return
        margin = self._margin(self.measure_level)
        with ThreadPoolExecutor(1, thread_name_prefix="dmdet-tile") as pool:
            ahead = pool.submit(self._tile_density, volume, cores[0], stats, margin)
            try:
                for k, core in enumerate(cores):
                    first = ahead.result()
                    if k + 1 < len(cores):
                        ahead = pool.submit(self._tile_density, volume, cores[k + 1], stats, margin)
                    yield self.tile_candidates(volume, core, stats, first=first)
            finally:
                ahead.cancel()

    def _decoy(self, volume, stats: normalise.Stats) -> tuple[np.ndarray, np.ndarray, int]:
        """Peaks of the network on the negated normalised stack (its centre, at most :data:`DECOY_CROP`): their
        scores and photometric masses after min-distance suppression, and the voxels searched. Real spots become
        holes, the stack's noise and structure stay: what the automatic threshold needs to go low safely."""
        core = scale.crop_region(volume.shape, DECOY_CROP)
        level = float(self.info.noise_peaks.get("measure_level", autothreshold.MEASURE_LEVEL))
        found = self.tile_candidates(volume, core, _Negated(stats), min(self.split_min_score, level),
                                     self.search_floor)
        keep = suppress(found.voxels, found.scores, self.min_distance)
        n = int(np.prod([c.stop - c.start for c in core]))
        return found.scores[keep], found.features[keep, pairs.PHOTONS], n

    def detect_frames(
        self, frames: Iterable[np.ndarray], voxel_size_um: Iterable[float] | None = None
    ) -> Iterator[Spots]:
        """Spots of each ZYX frame as it arrives (e.g. from a camera), tagged with its frame index.

        With :attr:`overlap` and frames that are all at hand (a sequence or an array), two frames are detected
        at once (:meth:`_in_order`); frames from an iterator are detected one by one, each yielded as soon as it
        is done.

        Parameters
        ----------
        frames : iterable of numpy.ndarray
            ZYX volumes, in order.
        voxel_size_um : sequence of 3 floats or None, optional
            Voxel size (z, y, x) in µm, the same for every frame.

        Yields
        ------
        Spots
            The spots of each frame in turn, ``frame`` set to its index (from 0).

        Raises
        ------
        InputError
            As :meth:`detect`, when a bad frame is reached.

        Examples
        --------
        >>> import numpy as np
        >>> z, y, x = np.ogrid[:10, :64, :64]
        >>> spot = lambda cz, cy, cx: 60 * np.exp(-(z - cz) ** 2 / 2 - ((y - cy) ** 2 + (x - cx) ** 2) / 4.5)
        >>> volume = np.random.default_rng(0).poisson(10 + spot(5, 20, 20) + spot(4, 40, 45)).astype(np.uint16)
        >>> frames = (volume, volume[:, ::-1])  # the second frame is the first upside down
        >>> for spots in Detector().detect_frames(frames):
        ...     print(spots.frame.tolist(), sorted(spots.zyx.round().astype(int).tolist()))
        [0, 0] [[4, 40, 45], [5, 20, 20]]
        [1, 1] [[4, 23, 45], [5, 43, 20]]
        """
        calls = (lambda f=frame, i=index: self.detect(f, voxel_size_um).with_frame(i)
                 for index, frame in enumerate(frames))
        yield from self._in_order(calls, isinstance(frames, (np.ndarray, Sequence)))

    def _in_order(self, calls: Iterable[Callable[[], Spots]], ahead: bool = True) -> Iterator[Spots]:
        """The results of ``calls``, in order; with :attr:`overlap` and ``ahead``, the next call runs in a second
        thread meanwhile (the GPU works on one frame while the CPU normalises or finds the peaks of the other)."""
        if not (self.overlap and ahead):
            for call in calls:
                yield call()
            return
        pending: deque[Future] = deque()
        with ThreadPoolExecutor(2, thread_name_prefix="dmdet-frame") as pool:
            try:
                for call in calls:
                    pending.append(pool.submit(call))
                    if len(pending) == 2:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    def n_tiles(self, stack: Stack) -> int:
        """Tiles in all frames of ``stack``: the length of :meth:`detect_stack`'s progress.

        Parameters
        ----------
        stack : Stack
            The stack to detect in.

        Returns
        -------
        int
            Frames x tiles per frame.

        Examples
        --------
        >>> from dmdet_infer import Stack
        >>> stack = Stack.from_array(np.zeros((3, 10, 64, 64), np.uint16))
        >>> Detector().n_tiles(stack), Detector(tile=(10, 32, 32)).n_tiles(stack)
        (3, 12)
        """
        return stack.data.shape[0] * len(self.cores(stack.data.shape[1:]))

    def detect_stack(self, stack: Stack, progress=None) -> Spots:
        """Spots of a :class:`Stack` read from a file (:func:`read_stack`) or wrapped (:meth:`Stack.from_array`).

        Frames stream one at a time (with :attr:`overlap`, two frames at a time).

        Parameters
        ----------
        stack : Stack
            The TZYX stack; its voxel size goes to the spots.
        progress : object or None, optional
            Anything with ``update(n)``; advanced by one per tile, :meth:`n_tiles` in all.

        Returns
        -------
        Spots
            The spots of all frames, tagged with their frame index when the stack has a time axis; for several
            frames, ``meta["frames"]`` holds each frame's meta (:meth:`Spots.concat`).

        Raises
        ------
        InputError
            When the stack has no frame, or as :meth:`detect` for a bad frame (the error names the file and the
            frame).

        Examples
        --------
        >>> import numpy as np
        >>> z, y, x = np.ogrid[:10, :64, :64]
        >>> spot = lambda cz, cy, cx: 60 * np.exp(-(z - cz) ** 2 / 2 - ((y - cy) ** 2 + (x - cx) ** 2) / 4.5)
        >>> volume = np.random.default_rng(0).poisson(10 + spot(5, 20, 20) + spot(4, 40, 45)).astype(np.uint16)
        >>> from dmdet_infer import Stack
        >>> stack = Stack.from_array(np.stack([volume, volume[:, ::-1]]), voxel_size_um=(0.3, 0.1, 0.1))
        >>> spots = Detector().detect_stack(stack)
        >>> len(spots), spots.frame.tolist(), spots.voxel_size_um, len(spots.meta["frames"])
        (4, [0, 0, 1, 1], (0.3, 0.1, 0.1), 2)
        """
        size = stack.voxel_size_um

        def frame(index: int) -> Spots:
            spots = self.detect(stack.data[index], size, path=_frame_name(stack, index), progress=progress)
            return spots.with_frame(index) if stack.has_time else spots

        calls = (functools.partial(frame, index) for index in range(stack.data.shape[0]))
        parts = list(self._in_order(calls))
        if not parts:
            raise InputError(where(stack.path, "no frames in the file"))
        return Spots.concat(parts) if len(parts) > 1 else parts[0]


def _frame_name(stack: Stack, index: int) -> str | Path | None:
    if stack.has_time and stack.data.shape[0] > 1:
        return f"{stack.path} (frame {index})"
    return stack.path
