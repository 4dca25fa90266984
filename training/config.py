"""Training configuration: dataclasses that round-trip through JSON (``training/configs/*.json``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOSSES = ("awing", "awing_noweight", "mse", "mse_noweight", "binary")
TARGETS = ("density", "binary")
SOURCES = ("simulated", "annotations")
NORMS = ("instance", "frozen")
TEACHER_ON = ("all", "plain")
GENERATORS = ("ptc", "microscopy", "mix")
#: The normalisation of models trained since 2026-11-30 (dmdet_infer.normalise); checkpoints whose config has
#: none were trained with :data:`LEGACY_NORMALISATION`.
LOCAL_NORMALISATION: dict[str, Any] = {"method": "local_median_mad", "block": [8, 32, 32]}
LEGACY_NORMALISATION: dict[str, Any] = {"method": "median_mad"}


@dataclass
class DataSpec:
    """Where the training stacks come from.

    ``simulated``: ``n_stacks`` volumes of ``shape`` from :func:`training.simulate.sample_params` (particle counts
    scale with the volume, so the density per voxel is the PTC one), item ``i`` simulated with
    ``default_rng(SeedSequence([seed, i]))``; ``snr``/``density``/``nuisance`` are passed to ``sample_params``
    (None = randomised). ``annotations``: every stack + CSV pair in ``folder`` (training.annotations).
    Items are split by index (annotated stacks in file-name order): the first ``split[0]`` fraction trains, the
    next ``split[1]`` validates, the rest is the test split. ``split_counts`` ``(n_train, n_val)`` splits by counts
    instead: the first ``n_train`` items train, the next ``n_val`` validate, the rest is the test split.
    ``split_stacks`` (annotations only) names the stacks of each split by file name (``"a.tif"`` or ``"a"``), e.g.
    ``{"train": ["a.tif", "b.tif"], "val": ["c.tif"]}``; every frame of a TZYX stack goes with its stack, and
    ``test`` (when not given) is every stack named in neither. At most one of ``split_counts`` and
    ``split_stacks`` is set; either replaces ``split``. ``cache_dir``: keep simulated items as .npz there (keyed
    by the spec) to skip re-simulating.
    ``online`` (simulated only): training batches come from fresh stacks, item ``n_stacks + k`` for the k-th
    crop, so training never sees a stack twice (no over-fitting to a pool); validation and test stay the pool's.
    ``generator``: ``ptc`` (training.simulate, the challenge's virus scenario), ``microscopy``
    (training.scenes: structured backgrounds, camera effects, hard negatives) or ``mix`` (each item one or the
    other, the challenge scenario ``ptc_share`` of the time). ``bright_share``: the fraction of microscopy stacks
    whose spots are drawn very bright (SNR log-uniform in [12, 300]; saturating spots must still give one peak
    each). ``texture_min``: the microscopy stacks' texture scale is at least this multiple of their spot σxy (0: the
    drawn scale, 1.5-12 voxels). ``normalisation``: the ``dmdet.normalisation`` spec inputs are normalised
    with (dmdet_infer.normalise), exported with the model.
    """

    source: str = "simulated"
    n_stacks: int = 200
    shape: tuple[int, int, int] = (10, 128, 128)
    snr: float | None = None
    density: str | float | tuple[float, float] | None = None
    nuisance: bool = False
    seed: int = 0
    split: tuple[float, float, float] = (0.5, 0.25, 0.25)
    split_counts: tuple[int, int] | None = None
    split_stacks: dict[str, list[str]] | None = None
    folder: str | None = None
    cache_dir: str | None = None
    online: bool = False
    generator: str = "ptc"
    ptc_share: float = 0.25
    bright_share: float = 0.0
    texture_min: float = 0.0
    normalisation: dict[str, Any] = field(default_factory=lambda: dict(LOCAL_NORMALISATION))

    def __post_init__(self) -> None:
        if self.split_counts is not None:
            counts = tuple(self.split_counts)
            if len(counts) != 2 or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                           for c in counts):
                raise ValueError(f"config data.split_counts must be two non-negative integers (train, val), "
                                 f"got {self.split_counts!r}")
            self.split_counts = (int(counts[0]), int(counts[1]))
        if self.split_stacks is not None:
            self.split_stacks = check_split_stacks(self.split_stacks)
            if self.split_counts is not None:
                raise ValueError("config data.split_counts and data.split_stacks exclude each other")
            if self.source != "annotations":
                raise ValueError("config data.split_stacks names annotated stacks: it needs data.source "
                                 "'annotations'")

    def split_definition(self) -> str:
        """How the items are split, in words."""
        if self.split_stacks is not None:
            parts = [f"{key} {', '.join(self.split_stacks[key])}" for key in ("train", "val", "test")
                     if key in self.split_stacks]
            if "test" not in self.split_stacks:
                parts.append("test the rest")
            return "; ".join(parts)
        if self.split_counts is not None:
            return f"name order: {self.split_counts[0]} train, {self.split_counts[1]} val, the rest test"
        return f"fractions {tuple(self.split)} in name order"

    def describe(self) -> str:
        if self.source == "annotations":
            return f"annotated stacks from {self.folder} (split: {self.split_definition()})"
        snr = "random SNR (sample_params)" if self.snr is None else f"SNR {self.snr}"
        density = "random density" if self.density is None else f"density {self.density}"
        if self.online:
            return (
                f"fresh simulated PTC-virus-like stacks {tuple(self.shape)} every batch (training.simulate, seed "
                f"{self.seed}, {'random SNR' if self.snr is None else f'SNR {self.snr}'}); validation: items of "
                f"the {self.n_stacks}-stack pool, split {tuple(self.split)}"
            )
        if self.generator == "ptc":
            kind = "PTC-virus-like stacks"
        elif self.generator == "microscopy":
            kind = "microscopy-like stacks (training.scenes)"
        else:
            kind = (f"stacks, microscopy-like (training.scenes) or, {self.ptc_share:.2g} of them, PTC-virus-like"
                    + (f"; {self.bright_share:.2g} of the microscopy-like ones with very bright spots"
                       if self.bright_share else "")
                    + (f"; texture at least {self.texture_min:.2g}× the spot σxy" if self.texture_min else ""))
        return (
            f"{self.n_stacks} simulated {kind} {tuple(self.shape)} (seed {self.seed}, {snr}, {density}"
            f"{', nuisances' if self.nuisance else ''}); split {tuple(self.split)}"
        )


@dataclass
class TrainConfig:
    """Everything that defines a training run (see training/configs/default.json)."""

    name: str = "dmdet"
    # network
    width: int = 16
    levels: int = 3
    z_pool: bool = False
    stem: bool = False  # the hourglass at half xy resolution behind a strided conv (training.network.DetNet3D)
    norm: str = "instance"  # "frozen": train with fixed running statistics (the exported operator)
    # targets and loss
    target: str = "density"
    sigma_zyx: tuple[float, float, float] = (1.0, 1.5, 1.5)
    loss: str = "awing"
    T: float = 0.2
    lam: float = 10.0
    binary_mode: str = "dice"
    # optimisation
    crop: tuple[int, int, int] = (10, 64, 64)
    batch: int = 4
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    max_steps: int = 20000
    max_minutes: float | None = None
    val_every: int = 250
    patience: int = 12
    monitor: str = "f1"
    seed: int = 0
    threads: int | None = None
    device: str = "auto"  # "auto": CUDA when torch sees a GPU, else CPU; or any torch device string
    data_workers: int | None = None  # processes that simulate the pool (None: one per core, at most 16)
    flips: bool = True
    transpose: bool = True
    init_from: str | None = None
    # copy only the init_from tensors whose names and shapes match this network (e.g. a stem network from the
    # plain one: everything but its new entry and full-resolution convolutions); the rest keeps its random init
    init_partial: bool = False
    # as init_partial, and a wider init_from's tensors give their leading channels (a width-6 network from a
    # width-8 one: a better start than random for distillation, see matching_state)
    init_slice: bool = False
    # distillation: the target is (1 - teacher_weight) * the annotated density + teacher_weight * the output of
    # the checkpoint ``teacher`` (in its exported mode) on the same crop
    teacher: str | None = None
    teacher_weight: float = 0.5
    # the teacher's map is the mean of its maps of the four YX flips of the crop (training.train.teacher_map)
    teacher_flips: bool = False
    # compute the teacher's maps of the whole training stacks once, before the first step, and blend them into their
    # targets (training.train.distilled): the steps then cost no teacher pass, and the maps see each stack's whole
    # context rather than the crop's; needs a stored pool (not data.online)
    teacher_precompute: bool = False
    # the annotated density is a floor of the blended target (max(truth, blend)): the teacher may add to the target
    # but never take away from an annotated spot (tried on the CPU: it did not keep faint tissue either;
    # BENCHMARKS.md, sixteenth session)
    teacher_floor: bool = False
    # which training stacks get the teacher's map: "all", or "plain" ones only (noise-only backgrounds: challenge
    # stacks, and scenes without texture, blobs or hot pixels; the others keep the annotated density, so that the
    # student does not learn the teacher's half-height responses to structure; training.train.plain_background);
    # "plain" needs teacher_precompute (tried on the CPU: the same as "all", faint tissue lost by step 2000 either
    # way, and by the truth alone too; BENCHMARKS.md, nineteenth session)
    teacher_on: str = "all"
    # also keep each validation's checkpoint as step-NNNNNN.pt in the run directory, to judge a run's earlier
    # checkpoints on other data: CPU fine-tunes held structured backgrounds early and lost them later while the
    # pool's own validation F1 kept rising (BENCHMARKS.md, twentieth session)
    keep_checkpoints: bool = False
    # detection / evaluation
    min_distance_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)
    refine: str = "gaussian"
    gate: float = 5.0
    thresholds: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(2, 19))
    data: DataSpec = field(default_factory=DataSpec)

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = _from_dict(DataSpec, self.data, "data.")
        if self.loss not in LOSSES:
            raise ValueError(f"config loss must be one of {LOSSES}, got {self.loss!r}")
        if self.target not in TARGETS:
            raise ValueError(f"config target must be one of {TARGETS}, got {self.target!r}")
        if (self.loss == "binary") != (self.target == "binary"):
            raise ValueError("config: loss 'binary' goes with target 'binary' (and only with it)")
        if self.norm not in NORMS:
            raise ValueError(f"config norm must be one of {NORMS}, got {self.norm!r}")
        if self.data.online and self.data.source != "simulated":
            raise ValueError("config data.online needs data.source 'simulated'")
        if self.monitor not in ("f1", "loss"):
            raise ValueError(f"config monitor must be 'f1' or 'loss', got {self.monitor!r}")
        if self.data.generator not in GENERATORS:
            raise ValueError(f"config data.generator must be one of {GENERATORS}, got {self.data.generator!r}")
        from dmdet_infer.normalise import check_spec

        check_spec(self.data.normalisation)
        if self.data.source not in SOURCES:
            raise ValueError(f"config data.source must be one of {SOURCES}, got {self.data.source!r}")
        if self.data.source == "annotations" and not self.data.folder:
            raise ValueError("config data.folder is required with data.source 'annotations'")
        if not 0.0 <= float(self.teacher_weight) <= 1.0:
            raise ValueError(f"config teacher_weight must be within [0, 1], got {self.teacher_weight!r}")
        if self.teacher and self.target != "density":
            raise ValueError("config teacher (distillation) needs target 'density'")
        if self.teacher_precompute and (not self.teacher or self.data.online):
            raise ValueError("config teacher_precompute needs a teacher and a stored pool (data.online false)")
        if self.teacher_on not in TEACHER_ON:
            raise ValueError(f"config teacher_on must be one of {TEACHER_ON}, got {self.teacher_on!r}")
        if self.teacher_on != "all" and not self.teacher_precompute:
            raise ValueError("config teacher_on 'plain' needs teacher_precompute (the blend is chosen per stack)")
        if len(self.crop) != 3 or any(int(c) < 1 for c in self.crop):
            raise ValueError(f"config crop must be 3 positive sizes (z, y, x), got {self.crop!r}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, values, "")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def check_split_stacks(value: Any) -> dict[str, list[str]]:
    """``split_stacks`` checked: keys among train/val/test (train and val required), lists of distinct stack
    names, no stack in two splits. Returns it with lists of strings."""
    if not isinstance(value, dict):
        raise ValueError(f"config data.split_stacks must map train/val/test to lists of stack names, got {value!r}")
    unknown = sorted(set(value) - {"train", "val", "test"})
    if unknown:
        raise ValueError(f"config data.split_stacks: unknown split(s) {', '.join(map(str, unknown))}; "
                         "expected train, val, test")
    out: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for key in ("train", "val", "test"):
        if key not in value:
            continue
        names = value[key]
        if isinstance(names, str) or not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError(f"config data.split_stacks.{key} must be a list of stack file names, got {names!r}")
        out[key] = [n.strip() for n in names]
        for name in out[key]:
            stem = Path(name).stem if Path(name).suffix.lower() in (".tif", ".tiff") else name
            if stem in seen:
                raise ValueError(f"config data.split_stacks: stack {name!r} is in {seen[stem]!r} and {key!r}")
            seen[stem] = key
    for key in ("train", "val"):
        if not out.get(key):
            raise ValueError(f"config data.split_stacks needs at least one {key} stack")
    return out


def _from_dict(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from JSON values: unknown keys are errors, lists become tuples."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    kwargs = {}
    for key, value in values.items():
        if isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
