"""Training data: reproducible simulated (or annotated) stacks, normalisation, targets, random crops.

Inputs are normalised exactly as at inference, with the data spec's ``normalisation`` (default: local median and
MAD, :data:`training.config.LOCAL_NORMALISATION`) through ``dmdet_infer.normalise.normalise``, the same code the
inference package runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dmdet_infer.normalise import normalise as infer_normalise
from training.config import LOCAL_NORMALISATION, DataSpec

NORMALISATION: dict[str, Any] = LOCAL_NORMALISATION
SPLITS = ("train", "val", "test")


def normalise(volume: np.ndarray, spec: dict[str, Any] | None = None) -> np.ndarray:
    """Normalise exactly as inference does (``dmdet_infer.normalise``); default :data:`NORMALISATION`."""
    return infer_normalise(volume, NORMALISATION if spec is None else spec)


@dataclass
class Item:
    """One stack: normalised input, target, true positions (N, 3) zyx, and what made it."""

    volume: np.ndarray
    target: np.ndarray
    positions: np.ndarray
    meta: dict[str, Any]


def split_indices(n: int, split: tuple[float, float, float] = (0.5, 0.25, 0.25)) -> dict[str, range]:
    """Item indices of each split, by index order: first ``split[0] * n`` train, next ``split[1] * n`` val."""
    if len(split) != 3 or min(split) < 0 or sum(split) <= 0:
        raise ValueError(f"split must be three non-negative fractions, got {split!r}")
    total = float(sum(split))
    a = int(round(n * split[0] / total))
    b = a + int(round(n * split[1] / total))
    return {"train": range(0, a), "val": range(a, min(b, n)), "test": range(min(b, n), n)}


def count_indices(n: int, counts: tuple[int, int]) -> dict[str, range]:
    """Item indices of each split by counts: the first ``counts[0]`` train, the next ``counts[1]`` validate, the
    rest is the test split."""
    a, b = int(counts[0]), int(counts[1])
    if a + b > n:
        raise ValueError(f"split counts ({a} train, {b} val) need at least {a + b} stacks, there are {n}")
    return {"train": range(0, a), "val": range(a, a + b), "test": range(a + b, n)}


def spec_indices(spec: DataSpec, n: int, stacks: Sequence[str] | None = None) -> dict[str, list[int]]:
    """Item indices of each split of ``spec`` among ``n`` items: by ``split_stacks`` (``stacks``: each item's
    stack file name), by ``split_counts``, else by the ``split`` fractions."""
    if spec.split_stacks is not None:
        if stacks is None or len(stacks) != n:
            raise ValueError("data.split_stacks needs the stack name of every item")
        return _named_indices(spec, list(stacks))
    ranges = count_indices(n, spec.split_counts) if spec.split_counts is not None else split_indices(n, spec.split)
    return {key: list(r) for key, r in ranges.items()}


def _named_indices(spec: DataSpec, stacks: list[str]) -> dict[str, list[int]]:
    def key(name: str) -> str:
        return Path(name).stem if Path(name).suffix.lower() in (".tif", ".tiff") else name

    available = {key(s) for s in stacks}
    chosen = {split: {key(n) for n in names} for split, names in (spec.split_stacks or {}).items()}
    missing = sorted(n for names in (spec.split_stacks or {}).values() for n in names if key(n) not in available)
    if missing:
        raise ValueError(f"data.split_stacks names stack(s) not in {spec.folder}: {', '.join(missing)} (it has "
                         f"{', '.join(sorted(set(stacks)))})")
    if "test" not in chosen:
        chosen["test"] = available - chosen["train"] - chosen["val"]
    return {split: [i for i, s in enumerate(stacks) if key(s) in chosen[split]] for split in SPLITS}


def make_target(kind: str, shape: tuple[int, int, int], positions: np.ndarray, sigma_zyx: tuple) -> np.ndarray:
    """Density (Gaussians, max-combined, peak 1) or binary target for ``positions``."""
    from training.targets import binary_target, density_target

    if kind == "density":
        return density_target(shape, positions, tuple(sigma_zyx))
    if kind == "binary":
        return binary_target(shape, positions)
    raise ValueError(f"target kind must be 'density' or 'binary', got {kind!r}")


def simulate_item(spec: DataSpec, index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Raw simulated volume, positions and metadata of item ``index``; depends only on (spec, index)."""
    from training.simulate import sample_params, simulate

    cached = _cache_path(spec, index)
    if cached is not None and cached.exists():
        with np.load(cached, allow_pickle=False) as f:
            return f["volume"], f["positions"], json.loads(str(f["meta"]))
    rng = np.random.default_rng(np.random.SeedSequence([int(spec.seed), int(index)]))
    generator = spec.generator
    if generator == "mix":
        generator = "microscopy" if rng.uniform() >= spec.ptc_share else "ptc"
    if generator == "microscopy":
        from training.scenes import sample_scene, simulate_scene

        scene = sample_scene(rng, shape=tuple(spec.shape), snr=spec.snr, bright=spec.bright_share,
                             texture_min=spec.texture_min)
        volume, positions = simulate_scene(scene, rng)
        meta = {"index": int(index), "snr": scene.snr, "generator": "microscopy", "params": dataclasses.asdict(scene)}
    else:
        params = sample_params(rng, snr=spec.snr, density=spec.density, shape=tuple(spec.shape),
                               nuisance=spec.nuisance)
        volume, positions = simulate(params, rng)
        meta = {"index": int(index), "snr": params.snr, "params": dataclasses.asdict(params)}
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez(tmp, volume=volume, positions=positions, meta=json.dumps(meta))
        tmp.replace(cached)
    return volume, positions, meta


def _cache_path(spec: DataSpec, index: int) -> Path | None:
    if not spec.cache_dir:
        return None
    key = {k: v for k, v in dataclasses.asdict(spec).items() if k in ("shape", "snr", "density", "nuisance", "seed")}
    if spec.generator != "ptc":
        key["generator"] = spec.generator
    for name in ("ptc_share", "bright_share", "texture_min"):  # at their defaults, older pools keep their keys
        if getattr(spec, name) != DataSpec.__dataclass_fields__[name].default:
            key[name] = getattr(spec, name)
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(spec.cache_dir) / f"sim-{digest}" / f"{index:06d}.npz"


def load_split(
    spec: DataSpec,
    split: str,
    target: str = "density",
    sigma_zyx: tuple[float, float, float] = (1.0, 1.5, 1.5),
    progress: bool = False,
    workers: int | None = None,
) -> list[Item]:
    """The items of one split (``train``/``val``/``test``), normalised, with targets.

    ``workers`` > 1 simulates in that many processes (the items depend only on (spec, index), so the result is
    the same).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if spec.source == "simulated":
        idx = spec_indices(spec, spec.n_stacks)[split]
        n_workers = min(int(workers or 1), len(idx))
        if n_workers > 1:
            return _load_parallel(spec, idx, target, sigma_zyx, n_workers, progress, split)
    return [make_item(volume, positions, meta, target, sigma_zyx, spec.normalisation)
            for volume, positions, meta in raw_split(spec, split, progress)]


def raw_split(spec: DataSpec, split: str, progress: bool = False) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    """The stacks of one split as they are (not normalised): ``(volume, positions (N, 3) zyx, meta)``, the ones
    :func:`load_split` makes its items from."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if spec.source == "annotations":
        from training.annotations import load_annotated

        items = load_annotated(spec.folder)  # type: ignore[arg-type]
        idx = spec_indices(spec, len(items), [meta["stack"] for _, _, meta in items])[split]
        return [(items[i][0], items[i][1], {"index": i, "source": str(spec.folder), **items[i][2]}) for i in idx]
    idx = spec_indices(spec, spec.n_stacks)[split]
    it = idx
    if progress:
        from tqdm import tqdm

        it = tqdm(idx, desc=f"simulating {split}", leave=False)
    return [simulate_item(spec, i) for i in it]


def fill_cache(spec: DataSpec, workers: int, progress: bool = False) -> int:
    """Simulate every item of a simulated pool into ``spec.cache_dir`` with ``workers`` processes.

    Runs that share the spec then read the stacks back instead of simulating them; returns the number of items.
    """
    if spec.source != "simulated" or not spec.cache_dir:
        raise ValueError("fill_cache needs a simulated data spec with a cache_dir")
    todo = [i for i in range(spec.n_stacks) if not _cache_path(spec, i).exists()]  # type: ignore[union-attr]
    _parallel_map(partial(_cache_one, spec), todo, workers, progress, f"simulating into {spec.cache_dir}")
    return spec.n_stacks


def _cache_one(spec: DataSpec, index: int) -> None:
    simulate_item(spec, index)  # written to the cache; nothing travels back to the parent process


def _simulated_item(spec: DataSpec, index: int, target: str, sigma_zyx: tuple[float, float, float]) -> Item:
    return make_item(*simulate_item(spec, index), target, sigma_zyx, spec.normalisation)


def _load_parallel(spec: DataSpec, idx: Sequence[int], target: str, sigma_zyx: tuple[float, float, float], workers: int,
                   progress: bool, split: str) -> list[Item]:
    """Simulated items of ``idx`` made by ``workers`` processes; the same items, in order, as one process makes."""
    make = partial(_simulated_item, spec, target=target, sigma_zyx=tuple(sigma_zyx))
    return _parallel_map(make, idx, workers, progress, f"simulating {split} ({workers} processes)")


def _parallel_map(fn: Callable[[int], Any], indices: Sequence[int], workers: int, progress: bool,
                  desc: str) -> list[Any]:
    """``[fn(i) for i in indices]`` in ``workers`` spawned processes (no fork of a process that may hold CUDA or
    torch threads), in order, with an optional progress bar."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = max(1, workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        it = pool.map(fn, indices, chunksize=max(1, len(indices) // (8 * workers)))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(indices), desc=desc, leave=False)
        return list(it)


def make_item(volume: np.ndarray, positions: np.ndarray, meta: dict[str, Any], target: str,
              sigma_zyx: tuple[float, float, float], normalisation: dict[str, Any] | None = None) -> Item:
    """A training item from a raw stack: normalised input (``normalisation``, default :data:`NORMALISATION`)
    and its target."""
    positions = np.asarray(positions, np.float64).reshape(-1, 3)
    vol = normalise(volume, normalisation)
    return Item(vol, make_target(target, vol.shape, positions, sigma_zyx), positions, meta)


class CropSampler:
    """Random training batches: a uniformly chosen item, a uniform random crop, random x/y flips and y/x swap.

    ``rng`` is a numpy Generator (its state goes into checkpoints, so resumed runs see the same batches).
    """

    def __init__(
        self,
        items: list[Item],
        crop: tuple[int, int, int],
        batch: int,
        rng: np.random.Generator,
        flips: bool = True,
        transpose: bool = True,
    ) -> None:
        if not items:
            raise ValueError("no training items")
        for item in items:
            if any(c > s for c, s in zip(crop, item.volume.shape)):
                raise ValueError(f"crop {tuple(crop)} is larger than a training stack {item.volume.shape}")
        self.items = items
        self._batches(crop, batch, rng, flips, transpose)

    def _batches(self, crop: tuple[int, int, int], batch: int, rng: np.random.Generator, flips: bool,
                 transpose: bool) -> None:
        self.crop = tuple(int(c) for c in crop)
        self.batch = int(batch)
        self.rng = rng
        self.flips = flips
        self.transpose = transpose and self.crop[1] == self.crop[2]

    def _draw(self) -> Item:
        return self.items[int(self.rng.integers(len(self.items)))]

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) tensors of shape (batch, 1, *crop)."""
        xs, ys = [], []
        for _ in range(self.batch):
            item = self._draw()
            start = [int(self.rng.integers(s - c + 1)) for s, c in zip(item.volume.shape, self.crop)]
            sl = tuple(slice(a, a + c) for a, c in zip(start, self.crop))
            x, y = item.volume[sl], item.target[sl]
            if self.flips:
                for axis in (1, 2):
                    if self.rng.integers(2):
                        x, y = np.flip(x, axis), np.flip(y, axis)
            if self.transpose and self.rng.integers(2):
                x, y = x.transpose(0, 2, 1), y.transpose(0, 2, 1)
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None])


class OnlineSampler(CropSampler):
    """Random training batches from freshly simulated stacks: item ``n_stacks + k`` gives the k-th crop.

    Items depend only on (spec, index), so a resumed run (``position`` goes into the checkpoint) continues the
    same stream; indices never collide with the pool's validation/test items.
    """

    def __init__(
        self,
        spec: DataSpec,
        target: str,
        sigma_zyx: tuple[float, float, float],
        crop: tuple[int, int, int],
        batch: int,
        rng: np.random.Generator,
        flips: bool = True,
        transpose: bool = True,
        position: int = 0,
    ) -> None:
        if any(c > s for c, s in zip(crop, spec.shape)):
            raise ValueError(f"crop {tuple(crop)} is larger than the simulated stacks {tuple(spec.shape)}")
        self.spec = dataclasses.replace(spec, cache_dir=None)
        self.target_kind = target
        self.sigma_zyx = tuple(sigma_zyx)
        self.position = int(position)
        self._batches(crop, batch, rng, flips, transpose)

    def _draw(self) -> Item:
        volume, positions, meta = simulate_item(self.spec, self.spec.n_stacks + self.position)
        self.position += 1
        return make_item(volume, positions, meta, self.target_kind, self.sigma_zyx, self.spec.normalisation)


def pad_to_stride(volume: np.ndarray, stride: tuple[int, int, int]) -> np.ndarray:
    """Zero-pad a normalised ZYX volume at the far end to multiples of ``stride`` (as dmdet_infer.tiling does)."""
    pad = [(0, -s % k) for s, k in zip(volume.shape, stride)]
    return np.pad(volume, pad) if any(p[1] for p in pad) else volume
