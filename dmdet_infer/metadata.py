"""The ``dmdet.*`` metadata an exported model carries (ONNX ``metadata_props``, JSON values).

This module is the single definition of the keys: ``export`` writes them with :func:`to_props`, the inference
package reads them with :func:`from_props`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .normalise import check_spec as check_normalisation
from .threshold import check as check_calibration

FORMAT_VERSION = 1
PREFIX = "dmdet."
KINDS = ("density", "binary")
PRECISIONS = ("fp32", "fp16")
MAX_STRIDE = 64  #: a network pooling more than 2**6 along an axis is no dmdet network


@dataclass(frozen=True)
class ModelInfo:
    """What inference needs to use a network exactly as it was trained.

    normalisation: ``{"method": "local_median_mad", "block": [8, 32, 32]}`` maps x -> (x - b) / s with the local
    background b and noise s of :mod:`dmdet_infer.normalise`; ``{"method": "median_mad"}`` maps
    x -> (x - median) / (1.4826 * MAD) with the statistics of the
    whole volume; ``{"method": "percentile", "low": 1.0, "high": 99.8}`` maps the two percentiles to 0 and 1.
    stride_zyx: input sizes must be multiples of it (inputs are padded, outputs cropped back).
    halo_zyx: voxels of context each side needed for an exact output (receptive field radius), for tiling.
    threshold: default peak threshold on the network output, tuned on validation data.
    sigma_zyx: standard deviations (voxels) of the target Gaussians (density models).
    noise_peaks: the noise calibration behind ``--threshold auto`` (:mod:`dmdet_infer.threshold`), or None.
    spot_sigma_zyx: the spot size (Gaussian σ, voxels) the model works at; spot_sigma_range_zyx: the (low, high)
        σ per axis it was trained on (:mod:`dmdet_infer.scale`); None for models that do not say.
    precision: the network's arithmetic, "fp32" or "fp16" (half-precision weights behind float32 input and
        output: fed and read exactly like an fp32 model).
    """

    kind: str
    normalisation: dict[str, Any]
    stride_zyx: tuple[int, int, int]
    halo_zyx: tuple[int, int, int]
    threshold: float
    sigma_zyx: tuple[float, float, float] | None = None
    min_distance_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)
    voxel_size_um: tuple[float, float, float] | None = None
    training_data: str = ""
    validation_scores: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    noise_peaks: dict[str, Any] | None = None
    spot_sigma_zyx: tuple[float, float, float] | None = None
    spot_sigma_range_zyx: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] | None = None
    precision: str = "fp32"
    format_version: int = FORMAT_VERSION

    REQUIRED = ("kind", "normalisation", "stride_zyx", "halo_zyx", "threshold")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"dmdet.kind must be one of {KINDS}, got {self.kind!r}")
        check_normalisation(self.normalisation)
        for name in ("stride_zyx", "halo_zyx"):
            value = getattr(self, name)
            if len(value) != 3 or any(int(v) != v or v < (1 if name == "stride_zyx" else 0) for v in value):
                raise ValueError(f"dmdet.{name} must be 3 non-negative integers (stride >= 1), got {value!r}")
        if max(self.stride_zyx) > MAX_STRIDE:  # every input is padded to it: 1000 made a 1e9-voxel block
            raise ValueError(f"dmdet.stride_zyx must be at most {MAX_STRIDE} on each axis, got {self.stride_zyx!r}")
        if self.sigma_zyx is not None and (len(self.sigma_zyx) != 3 or not all(v > 0 for v in self.sigma_zyx)):
            raise ValueError(f"dmdet.sigma_zyx must be 3 positive numbers (or null), got {self.sigma_zyx!r}")
        if self.noise_peaks is not None:
            check_calibration(self.noise_peaks)
        if self.spot_sigma_zyx is not None:
            rng = self.spot_sigma_range_zyx
            if (len(self.spot_sigma_zyx) != 3 or not all(isinstance(v, (int, float)) and v > 0
                                                         for v in self.spot_sigma_zyx)
                    or rng is None or len(rng) != 3 or any(len(r) != 2 or not 0 < r[0] <= r[1] for r in rng)):
                raise ValueError("dmdet.spot_sigma_zyx needs 3 positive sizes and dmdet.spot_sigma_range_zyx 3 "
                                 f"(low, high) pairs, got {self.spot_sigma_zyx!r} and {rng!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"dmdet.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.format_version > FORMAT_VERSION:
            raise ValueError(
                f"model format version {self.format_version} is newer than this dmdet_infer understands "
                f"({FORMAT_VERSION}); upgrade dmdet"
            )


def to_props(info: ModelInfo) -> dict[str, str]:
    """ONNX metadata_props for ``info``: ``dmdet.<field>`` -> JSON text."""
    return {PREFIX + key: json.dumps(value) for key, value in asdict(info).items()}


def from_props(props: dict[str, str]) -> ModelInfo:
    """Parse ``dmdet.*`` props; raises ValueError naming the missing or bad key."""
    values: dict[str, Any] = {}
    for key, text in props.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX):]
        if name not in ModelInfo.__dataclass_fields__:
            continue  # written by a newer exporter: ignore unknown keys
        try:
            values[name] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"metadata {key} is not valid JSON ({exc.msg})") from None
    missing = [k for k in ModelInfo.REQUIRED if k not in values]
    if missing:
        raise ValueError("missing dmdet metadata " + ", ".join(PREFIX + k for k in missing))
    _check_types(values)
    for name in TRIPLES:
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    if values.get("spot_sigma_range_zyx") is not None:
        values["spot_sigma_range_zyx"] = tuple(tuple(r) for r in values["spot_sigma_range_zyx"])
    values["threshold"] = float(values["threshold"])
    try:
        return ModelInfo(**values)
    except ValueError:
        raise
    except Exception as exc:  # a value of the right type but the wrong inside (e.g. a calibration's rows)
        raise ValueError(f"malformed dmdet metadata ({type(exc).__name__}: {exc})") from None


TRIPLES = ("stride_zyx", "halo_zyx", "sigma_zyx", "min_distance_zyx", "voxel_size_um", "spot_sigma_zyx")
_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,), "normalisation": (dict,), "training_data": (str,), "validation_scores": (dict,),
    "config": (dict,), "name": (str,), "noise_peaks": (dict, type(None)), "precision": (str,),
    "format_version": (int,),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_types(values: dict[str, Any]) -> None:
    """Each key's JSON type and range, so that a malformed model is refused naming the key (not a traceback)."""
    def bad(name: str, what: str) -> ValueError:
        return ValueError(f"{PREFIX}{name} must be {what}, got {json.dumps(values[name])[:80]}")

    for name, types in _TYPES.items():
        if name in values and not isinstance(values[name], types):
            raise bad(name, "a " + " or ".join("null" if t is type(None) else t.__name__ for t in types))
    nullable = ("sigma_zyx", "voxel_size_um", "spot_sigma_zyx")  # null: unknown; the others need numbers
    for name in TRIPLES:
        if name not in values and name not in ("stride_zyx", "halo_zyx"):
            continue  # absent: the default
        value = values.get(name)
        if value is None and name in nullable:
            continue
        if not (isinstance(value, list) and len(value) == 3 and all(_is_number(v) for v in value)):
            raise bad(name, "a list of 3 numbers")
    rng = values.get("spot_sigma_range_zyx")
    if rng is not None and not (isinstance(rng, list) and len(rng) == 3 and all(
            isinstance(r, list) and len(r) == 2 and all(_is_number(v) for v in r) for r in rng)):
        raise bad("spot_sigma_range_zyx", "3 [low, high] pairs of numbers")
    t = values["threshold"]
    if not (_is_number(t) and 0.0 <= t < 1.0):
        raise bad("threshold", "a number in [0, 1)")
