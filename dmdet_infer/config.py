"""``DetectorConfig``: every detection option in one frozen object.

Built once, from the Python API (``Detector(threshold=0.3)`` or ``DetectorConfig(...)``), the command line
(``dmdet-infer``'s options are made from its fields) or a JSON file (:meth:`DetectorConfig.from_file`,
``dmdet-infer --config``), and handed as it is to :class:`~dmdet_infer.detector.Detector`, to the dask workers
(:mod:`dmdet_infer.distributed`) and to the evaluation (``training.runner.detector_for``). A new option is one
field here (with its ``cli`` metadata for the command line), and the code in ``Detector`` that uses it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import InputError, where
from .model import CPU_PRECISIONS, DEVICES, RUNTIMES

if TYPE_CHECKING:
    from .detector import Detector

Triple = tuple[float, float, float]
REFINEMENTS = ("lsq", "gaussian", "parabolic", "centroid", "none")


def as_triple(value: float | Iterable[float], name: str) -> Triple:
    """A scalar or three values (z, y, x) as a tuple of three floats; raises :class:`InputError` naming ``name``.

    Examples
    --------
    >>> as_triple(2, "min_distance"), as_triple([1, 2, 2], "min_distance")
    ((2.0, 2.0, 2.0), (1.0, 2.0, 2.0))
    """
    try:
        values = ([float(value)] * 3 if isinstance(value, numbers.Real)
                  else [float(v) for v in value])  # type: ignore[union-attr]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or not all(math.isfinite(v) for v in values) or min(values) < 0:
        raise InputError(f"{name} needs one value or three (z,y,x), all finite and >= 0; got {value!r}")
    return values[0], values[1], values[2]


def check_threshold(value: object) -> float:
    """A fixed threshold as a float in [0, 1); raises :class:`InputError` naming ``threshold``.

    Examples
    --------
    >>> check_threshold("0.3")
    0.3
    """
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"threshold must be a number in [0, 1) or 'auto', got {value!r}") from None
    if not 0.0 <= number < 1.0:
        raise InputError(f"threshold must be in [0, 1) (the density map is a sigmoid output), got {value}")
    return number


def _cli(flag: str, help: str, kind: str = "text", **click: Any) -> dict[str, Any]:
    """A field's ``cli`` metadata: the flag, its help, how ``dmdet-infer`` parses it (``kind``: text, choice, bool,
    path, threshold, triple, int_triple, spot_size, gib) and more keyword arguments of ``click.option``."""
    return {"cli": {"flag": flag, "help": help, "kind": kind, **click}}


@dataclass(frozen=True)
class DetectorConfig:
    """The detection options, validated, frozen and hashable (what a dask worker needs to build the same detector).

    Parameters
    ----------
    model : str or None, optional
        Path to an exported model; None: the model shipped in the package.
    device : str, optional
        "auto" (CUDA when it really works, else CPU), "cpu" or "cuda".
    threshold : float, str or None, optional
        A number in [0, 1) (density units), "auto" (each volume's own threshold from the model's noise
        calibration, :mod:`dmdet_infer.threshold`), or None: "auto" when the model is calibrated, else its tuned
        threshold (also the fallback of "auto" when no spot stands out of the noise). A number is the cut and
        nothing else: which spots are split into pairs and how their masses are measured follow the model
        (``Detector.split_min_score``, ``Detector.window_level``), not this number.
    min_distance : float or sequence of 3 floats, optional
        Overrides the model's default (voxels, z,y,x).
    refine : str, optional
        Sub-voxel refinement, "lsq" (default: log-Gaussian fit by least squares over the 3x3x3 neighbourhood),
        "gaussian" (per-axis log-Gaussian 3-point), "parabolic", "centroid" or "none".
    tile : sequence of 3 ints or None, optional
        Largest core (z,y,x) sent to the network at once; None chooses it from the volume size and the memory
        (a quarter of the free RAM, or of the free GPU memory on CUDA, at most ``tile_memory`` bytes per tile,
        measured once, when the detector is made).
    threads : int or None, optional
        The network's threads (ONNX Runtime's intra-op threads, OpenVINO's inference threads) and those of the
        normalisation statistics; None (or 0): the runtime's default, and up to 4 for the statistics.
    tile_memory : float or None, optional
        Most bytes per tile when ``tile`` is None; default 2 GiB.
    split_pairs : bool, optional
        Split spots that are two particles merged into one peak (:mod:`dmdet_infer.pairs`; density models only).
        Only spots scoring at least ``Detector.split_min_score`` are considered, and their windows are bounded
        by the other peaks scoring at least ``Detector.window_level`` (both the model's tuned threshold, whatever
        ``threshold`` is).
    mass_cut : bool, optional
        With 'auto' and a calibration that has them, also cut on the spots' photometric mass
        (:func:`dmdet_infer.threshold.choose_cut`); False: the score alone (:func:`dmdet_infer.threshold.choose`).
    spot_size : "auto", "off", sequence of 3 floats, str or None, optional
        The stack's spot σ in voxels (z, y, x), or as text (:func:`dmdet_infer.scale.parse_spot_size`: "1.7,1.9"
        in voxels, "0.6,0.2um" in µm with each volume's voxel size, "fwhm=1.4,0.45um" as full widths):
        stacks whose spots lie outside the model's range are resampled to its spot size and the positions mapped
        back. "auto" (default): estimated from each stack (:func:`dmdet_infer.scale.estimate`) and acted on only
        when clearly outside the range (beyond it by a factor :data:`dmdet_infer.detector.AUTO_MARGIN`); None or
        "off": never resample. What was used is in ``Spots.meta["scale"]``.
    overlap : bool or None, optional
        Run the network on the next tile in a worker thread while this thread finds the peaks of the current one
        (ONNX Runtime releases the GIL while it runs), and detect two frames at once where all frames are at hand
        (``Detector.detect_stack``, ``Detector.detect_frames`` of a sequence or array). None (default): on when the
        model runs on CUDA, off on the CPU (where both would compete for the same cores and two tiles or frames
        would be in memory). The spots are the same either way.
    runtime : str, optional
        What runs the network: "auto" (OpenVINO on the CPU when it is installed, ``pip install "dmdet[openvino]"``,
        and the model is float32; else ONNX Runtime), "onnxruntime" or "openvino" (CPU only).
    precision : str, optional
        The network's arithmetic through OpenVINO on the CPU: "auto" (bf16 where the CPU computes it natively,
        AVX-512 BF16 or AMX, fp32 otherwise), "fp32" or "bf16". bf16 is about 1.6x faster; its density maps lie
        within 0.006 of fp32's (BENCHMARKS.md). What ran is in ``Spots.meta["precision"]``.

    Raises
    ------
    InputError
        When an option is invalid; the message names the parameter.

    See Also
    --------
    Detector : takes a config (``Detector(config=...)``) or the same options as keywords.

    Examples
    --------
    >>> config = DetectorConfig(threshold=0.3, min_distance=2, tile=[10, 128, 128])
    >>> config.threshold, config.min_distance, config.tile
    (0.3, (2.0, 2.0, 2.0), (10, 128, 128))
    >>> DetectorConfig.from_dict(config.to_dict()) == config
    True
    >>> DetectorConfig(refine="magic")
    Traceback (most recent call last):
    ...
    dmdet_infer.errors.InputError: refine must be one of lsq, gaussian, parabolic, centroid, none, got 'magic'
    """

    model: str | None = field(default=None, metadata=_cli(
        "--model", "Exported dmdet model. Default: the model shipped with dmdet.", "path", metavar="MODEL.onnx"))
    device: str = field(default="auto", metadata=_cli(
        "--device", "auto uses CUDA when onnxruntime-gpu really works here, else the CPU.", "choice",
        choices=DEVICES, show_default=True))
    threshold: float | str | None = field(default=None, metadata=_cli(
        "--threshold", "Minimum density-map value of a spot, in [0,1), or 'auto': each stack's own threshold from "
        "the model's noise calibration (faint stacks get a lower one, bright ones a higher one). Default: auto when "
        "the model is calibrated (the shipped one is), else its tuned value. A number changes the cut only, not how "
        "pairs are split or masses measured. Example: --threshold 0.3", "threshold", metavar="T|auto"))
    min_distance: Triple | None = field(default=None, metadata=_cli(
        "--min-distance", "Smallest distance between two spots in voxels (one value or Z,Y,X). Example: 1,2,2",
        "triple", metavar="Z,Y,X"))
    refine: str = field(default="lsq", metadata=_cli(
        "--refine", "Sub-voxel refinement of each peak: log-Gaussian fit by least squares over the 3x3x3 "
        "neighbourhood (lsq), per-axis log-Gaussian 3-point (gaussian), parabolic, intensity-weighted centroid, or "
        "none (integer voxels).", "choice", choices=REFINEMENTS, show_default=True))
    tile: tuple[int, int, int] | None = field(default=None, metadata=_cli(
        "--tile", "Largest block sent to the network at once. Default: automatic. Example: 10,256,256",
        "int_triple", metavar="Z,Y,X"))
    threads: int | None = None
    tile_memory: float | None = field(default=None, metadata=_cli(
        "--tile-memory", "Most memory one tile may use, in GiB, when --tile is not given. Default: a quarter of the "
        "free RAM (of the free GPU memory with CUDA), at most 2. Example: --tile-memory 8", "gib", metavar="GIB"))
    split_pairs: bool = field(default=True, metadata=_cli(
        "--split-pairs/--no-split-pairs", "Split a spot that is two particles merged into one peak (an elongated "
        "blob with about twice the photons of the stack's typical spot) into two spots.", "bool", show_default=True))
    mass_cut: bool = field(default=True, metadata=_cli(
        "--mass-cut/--no-mass-cut", "With --threshold auto, also cut on each spot's photometric mass (drops noise "
        "peaks in bright stacks). --no-mass-cut: the score alone, which can be better on strongly uneven background "
        "or with spots much larger than the model's.", "bool", show_default=True))
    spot_size: Literal["auto", "off"] | Triple | str | None = field(default="auto", metadata=_cli(
        "--spot-size", "Gaussian sigma of the spots, z then xy: in voxels (1.7,1.9), in µm with the voxel size "
        "(0.6,0.2um), or as FWHM (fwhm=1.4,0.45um). A stack whose spots lie outside the model's range is "
        "resampled to the model's spot size and positions are mapped back. auto: estimated from each stack, acted "
        "on only when clearly outside the range; off: never resample.", "spot_size", metavar="Z,XY[um]|auto|off",
        show_default=True))
    overlap: bool | None = None
    runtime: str = field(default="auto", metadata=_cli(
        "--runtime", "What runs the network on the CPU: auto uses OpenVINO when it is installed (pip install "
        "\"dmdet[openvino]\"; about 2x faster here, the same spots) and ONNX Runtime otherwise.", "choice",
        choices=RUNTIMES, show_default=True))
    precision: str = field(default="auto", metadata=_cli(
        "--precision", "The network's arithmetic through OpenVINO on the CPU: auto uses bf16 where the CPU computes "
        "it natively (AVX-512 BF16 or AMX; about 1.6x faster, maps within 0.006 of fp32) and fp32 otherwise.",
        "choice", choices=CPU_PRECISIONS, show_default=True))

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if self.model is not None:
            if not isinstance(self.model, (str, os.PathLike)):
                raise InputError(f"model must be a path to an exported model or None, got {type(self.model).__name__}")
            put("model", os.fspath(self.model))
        if self.device not in DEVICES:
            raise InputError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.runtime not in RUNTIMES:
            raise InputError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.precision not in CPU_PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(CPU_PRECISIONS)}, got {self.precision!r}")
        if isinstance(self.threshold, str) and self.threshold.strip().lower() == "auto":
            put("threshold", "auto")
        elif self.threshold is not None:
            put("threshold", check_threshold(self.threshold))
        if self.min_distance is not None:
            put("min_distance", as_triple(self.min_distance, "min_distance"))
        if self.refine not in REFINEMENTS:
            raise InputError(f"refine must be one of {', '.join(REFINEMENTS)}, got {self.refine!r}")
        if self.tile is not None:
            try:
                tile = tuple(int(t) for t in self.tile)
            except (TypeError, ValueError):
                tile = ()
            if len(tile) != 3 or min(tile) < 1:
                raise InputError(f"tile needs three positive sizes Z,Y,X, got {self.tile!r}")
            put("tile", tile)
        if self.threads is not None:
            if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
                raise InputError(f"threads must be a whole number >= 0 or None, got {self.threads!r}")
        if self.tile_memory is not None:
            if isinstance(self.tile_memory, bool) or not isinstance(self.tile_memory, (int, float)) \
                    or not self.tile_memory > 0:
                raise InputError(f"tile_memory must be positive, got {self.tile_memory!r}")
            put("tile_memory", float(self.tile_memory))
        put("split_pairs", bool(self.split_pairs))
        put("mass_cut", bool(self.mass_cut))
        put("spot_size", _spot_size(self.spot_size))
        if self.overlap is not None:
            put("overlap", bool(self.overlap))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DetectorConfig:
        """A config from a mapping of its fields (JSON values: lists for triples); unknown keys are refused.

        Parameters
        ----------
        values : mapping
            Field names to values; the fields not given keep their defaults.

        Returns
        -------
        DetectorConfig

        Raises
        ------
        InputError
            When a key is not an option, or a value is invalid.

        Examples
        --------
        >>> DetectorConfig.from_dict({"threshold": "auto", "tile": [10, 64, 64]}).tile
        (10, 64, 64)
        >>> DetectorConfig.from_dict({"treshold": 0.3})
        Traceback (most recent call last):
        ...
        dmdet_infer.errors.InputError: unknown detector option 'treshold'; the options are model, device, \
threshold, min_distance, refine, tile, threads, tile_memory, split_pairs, mass_cut, spot_size, overlap, \
runtime, precision
        """
        if not isinstance(values, Mapping):
            raise InputError(f"a detector config is a mapping of options, got {type(values).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in names]
        if unknown:
            raise InputError(f"unknown detector option {', '.join(map(repr, unknown))}; the options are "
                             f"{', '.join(names)}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """Every field, with JSON values (lists for triples): what :meth:`from_dict` and :meth:`from_file` read.

        Returns
        -------
        dict
            Field name to value, for every field (the defaults included), in the fields' order; ready for
            ``json.dump``.

        Examples
        --------
        >>> DetectorConfig(tile=(10, 64, 64)).to_dict()["tile"]
        [10, 64, 64]
        >>> import json
        >>> DetectorConfig.from_dict(json.loads(json.dumps(DetectorConfig(min_distance=2).to_dict()))).min_distance
        (2.0, 2.0, 2.0)
        """
        return {f.name: list(v) if isinstance(v, tuple) else v
                for f in dataclasses.fields(self) for v in (getattr(self, f.name),)}

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> DetectorConfig:
        """A config from a JSON file holding an object of options (:meth:`from_dict`).

        Parameters
        ----------
        path : str or os.PathLike
            The JSON file; a relative ``model`` in it is taken relative to the file's folder.

        Returns
        -------
        DetectorConfig

        Raises
        ------
        InputError
            When the file cannot be read, is not JSON, or holds an unknown or invalid option; the message names
            the file.

        Examples
        --------
        >>> import json, os, tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "detector.json")
        ...     with open(path, "w") as f:
        ...         json.dump({"threshold": 0.4, "split_pairs": False}, f)
        ...     config = DetectorConfig.from_file(path)
        >>> config.threshold, config.split_pairs
        (0.4, False)
        """
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(where(path, f"cannot read the config ({exc.strerror or exc})")) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(where(path, f"not a JSON config ({exc})")) from None
        if isinstance(values, dict) and isinstance(values.get("model"), str):
            values["model"] = str(path.parent / Path(values["model"]).expanduser())
        try:
            return cls.from_dict(values)
        except InputError as exc:
            raise InputError(where(path, str(exc))) from None

    def replace(self, **changes: Any) -> DetectorConfig:
        """A copy with ``changes`` (validated like a new config).

        Parameters
        ----------
        **changes
            Fields and their new values; the other fields are kept.

        Returns
        -------
        DetectorConfig
            The new config (this one, frozen, is unchanged).

        Raises
        ------
        InputError
            When a new value is invalid; the message names the option.
        TypeError
            When a name is not a field.

        Examples
        --------
        >>> config = DetectorConfig(threshold=0.3, split_pairs=False)
        >>> config.replace(threshold=0.5).threshold, config.replace(threshold=0.5).split_pairs, config.threshold
        (0.5, False, 0.3)
        >>> config.replace(refine="magic")
        Traceback (most recent call last):
        ...
        dmdet_infer.errors.InputError: refine must be one of lsq, gaussian, parabolic, centroid, none, got 'magic'
        """
        return dataclasses.replace(self, **changes)

    def build(self) -> Detector:
        """The :class:`~dmdet_infer.detector.Detector` of this config (``Detector(config=self)``).

        How a dask worker makes its detector from the config it was sent (:mod:`dmdet_infer.distributed`).

        Returns
        -------
        Detector
            A new detector, with its own ONNX Runtime session.

        Raises
        ------
        InputError
            As :class:`~dmdet_infer.detector.Detector`: when the model is missing or invalid, CUDA is asked for
            but not active, or "auto" is asked of a model without a noise calibration.

        Examples
        --------
        >>> detector = DetectorConfig(threshold=0.3, split_pairs=False).build()
        >>> detector.fixed_threshold, detector.split_pairs, detector.config.threshold
        (0.3, False, 0.3)
        """
        from .detector import Detector

        return Detector(config=self)


def _spot_size(value: Any) -> Literal["auto", "off"] | Triple | str | None:
    """``spot_size`` as kept: "auto", "off", a triple of positive voxels, or a text spec whose units need each
    volume's voxel size (µm); a text spec in voxels becomes a triple."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("auto", "off")):
        return None if value is None else value.strip().lower()
    if isinstance(value, str):
        from .scale import parse_spot_size

        text = value.strip()
        microns = text.lower().endswith(("um", "µm"))
        try:  # in µm: the syntax only, as the size in voxels needs each volume's voxel size
            sigma = parse_spot_size(text, (1.0, 1.0, 1.0), check_range=not microns)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        return text if microns else sigma
    sigma = as_triple(value, "spot_size")
    if min(sigma) <= 0:
        raise InputError(f"spot_size must be positive, got {value!r}")
    return sigma
