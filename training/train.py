"""Training loop: random crops, AMSGrad, periodic validation (loss and F1), early stopping, resumable checkpoints.

Run directory layout (``--out``): ``config.json``, ``last.pt`` (resume point), ``best.pt`` (best validation
score; after training it also holds the tuned ``threshold`` and ``val_scores``), ``log.json`` (history and
summary), ``loss_curve.png``; with ``keep_checkpoints``, ``step-NNNNNN.pt`` at every validation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import TrainConfig
from training.data import CropSampler, Item, OnlineSampler, load_split, pad_to_stride
from training.losses import make_loss
from training.network import DetNet3D, count_params, freeze_norms, receptive_halo, set_norm_mode, stride

FINE_THRESHOLDS = tuple(round(0.02 * i, 2) for i in range(1, 50))


def build_model(cfg: TrainConfig) -> DetNet3D:
    """The network a config describes."""
    return DetNet3D(width=cfg.width, levels=cfg.levels, z_pool=cfg.z_pool, stem=cfg.stem)


def matching_state(model: torch.nn.Module, state: dict[str, torch.Tensor],
                   leading: bool = False) -> dict[str, torch.Tensor]:
    """``model``'s state with every tensor of ``state`` whose name and shape match copied in (a warm start of one
    architecture from another's weights). ``leading``: a tensor of the same name that is no smaller along any
    axis gives its leading slice (the first channels: a narrower network from a wider one, every level's channels
    cut at the same index, so residual sums keep matching channels)."""
    own = model.state_dict()
    for k, v in state.items():
        if k not in own:
            continue
        if own[k].shape == v.shape:
            own[k] = v
        elif leading and v.dim() == own[k].dim() and all(a <= b for a, b in zip(own[k].shape, v.shape)):
            own[k] = v[tuple(slice(0, n) for n in own[k].shape)].clone()
    return own


#: The flips (tensor dims of N, C, Z, Y, X) whose maps a flip-averaging teacher averages: none, x, y, both.
TEACHER_FLIPS = ((), (4,), (3,), (3, 4))


#: Volumes per pass in :func:`predict_many` (whole training stacks: 16x128x128 at most in the configs).
PREDICT_BATCH = 4


def teacher_map(teacher: torch.nn.Module, x: torch.Tensor, flips: bool = False) -> torch.Tensor:
    """The teacher's density map of ``x``; with ``flips``, the mean of its maps of the four YX flips of ``x``,
    each flipped back (test-time augmentation: the mean is steadier on noise than any one map, and a student
    distilled from it learns that steadiness at the cost of one pass)."""
    if not flips:
        return teacher(x)
    maps = [teacher(x.flip(d)).flip(d) if d else teacher(x) for d in TEACHER_FLIPS]
    return torch.stack(maps).mean(0)


def plain_background(item: Item) -> bool:
    """Whether a stack counts as noise-only background for ``teacher_on="plain"``: a scene of
    :mod:`training.scenes` without texture, blobs or hot pixels (smooth cells, haze and gradients allowed), and any
    stack not made by that generator (the challenge scenario; an annotated folder's stacks, about which nothing is
    known)."""
    if item.meta.get("generator") != "microscopy":
        return True
    params = item.meta.get("params", {})
    return not (params.get("texture", 0.0) or params.get("n_blobs", 0) or params.get("hot_pixels", 0))


@torch.no_grad()
def distilled(items: list[Item], teacher: DetNet3D | ExportedNetwork, weight: float, flips: bool = False,
              progress: bool = False, floor: bool = False, on: str = "all") -> list[Item]:
    """``items`` with each target blended towards the teacher's map of the whole stack: ``lerp(target, map,
    weight)``; with ``flips``, the map is the mean over the four YX flips (as :func:`teacher_map`); with
    ``floor``, never below the target itself; with ``on="plain"``, only the stacks of :func:`plain_background`
    (the others keep their targets and cost no teacher pass)."""
    if on == "plain":
        chosen = [i for i, item in enumerate(items) if plain_background(item)]
        out = list(items)
        for i, item in zip(chosen, distilled([items[i] for i in chosen], teacher, weight, flips, progress, floor)):
            out[i] = item
        return out
    it = range(0, len(items), PREDICT_BATCH)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="teacher maps", leave=False, unit_scale=PREDICT_BATCH)
    out = []
    for start in it:
        chunk = items[start:start + PREDICT_BATCH]
        for item, mean in zip(chunk, predict_many(teacher, [c.volume for c in chunk], flips)):
            target = (1.0 - weight) * item.target.astype(np.float64) + weight * mean.astype(np.float64)
            if floor:
                target = np.maximum(target, item.target)
            out.append(dataclasses.replace(item, target=target.astype(np.float32)))
    return out


def teacher_cache_path(items: list[Item], cfg: TrainConfig) -> Path | None:
    """Where :func:`cached_distilled` keeps the distilled targets of ``items``: a file in ``cfg.data.cache_dir``
    named by a digest of the teacher checkpoint's bytes (``cfg.teacher``), the blend (weight, flips, floor, and
    ``teacher_on`` where not "all") and every item's input and target, so a stale file is never read; None without
    a teacher or a cache_dir, or with items of several shapes."""
    if not cfg.teacher or not cfg.data.cache_dir or not items or len({np.shape(i.target) for i in items}) > 1:
        return None
    h = hashlib.sha1(Path(cfg.teacher).read_bytes())
    blend = (cfg.teacher_weight, cfg.teacher_flips, cfg.teacher_floor, len(items))
    h.update(repr(blend if cfg.teacher_on == "all" else (*blend, cfg.teacher_on)).encode())  # old keys stay valid
    for item in items:
        h.update(np.ascontiguousarray(item.volume, np.float32).tobytes())
        h.update(np.ascontiguousarray(item.target, np.float32).tobytes())
    return Path(cfg.data.cache_dir) / f"teacher-{h.hexdigest()[:16]}.npy"


def cached_distilled(items: list[Item], teacher: DetNet3D | ExportedNetwork, cfg: TrainConfig,
                     progress: bool = False) -> list[Item]:
    """:func:`distilled` with the config's blend, its targets kept in ``data.cache_dir`` (:func:`teacher_cache_path`)
    so that a resumed CPU run does not compute the teacher's maps again (about 10 minutes for 1080 stacks on 2
    cores). The file is written atomically (:func:`dmdet_infer.io.atomic_write`)."""
    from dmdet_infer.io import atomic_write

    path = teacher_cache_path(items, cfg)
    if path is not None and path.exists():
        targets = np.load(path)
        if progress:
            print(f"teacher maps from {path}")
        return [dataclasses.replace(item, target=t) for item, t in zip(items, targets)]
    out = distilled(items, teacher, cfg.teacher_weight, cfg.teacher_flips, progress, cfg.teacher_floor,
                    cfg.teacher_on)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            np.save(f, np.stack([item.target for item in out]))
    return out


def cpu_layout(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` with channels-last 3D weights on the CPU (unchanged elsewhere): its convolutions then run in
    oneDNN's channels-last kernels, about 1.4x faster per training step of the width-8 networks on 2 cores (batch 4
    of 10x64x64) and 1.2x in whole-stack passes, with the same outputs within 1e-7 (BENCHMARKS.md, issue 15)."""
    return module.to(memory_format=torch.channels_last_3d) if device.type == "cpu" else module


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: the first CUDA GPU when torch sees one, else the CPU; otherwise the named torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_workers() -> int:
    """Processes that simulate a data pool: one per core, at most 16."""
    return max(1, min(16, os.cpu_count() or 1))


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict`` with every tensor on the CPU (checkpoints load anywhere)."""
    return _cpu_tree(module.state_dict())


@torch.no_grad()
def predict(model: DetNet3D, volume: np.ndarray, flips: bool = False) -> np.ndarray:
    """Network output (ZYX float32) for one normalised volume, zero-padded to the stride and cropped back; with
    ``flips``, the mean over the four YX flips (:func:`teacher_map`).

    Uses the model in its current mode and device; call ``model.eval()`` first for inference behaviour.
    """
    return predict_many(model, [volume], flips)[0]


class ExportedNetwork:
    """A checkpoint run through its exported network, as ``dmdet_infer`` runs it in fp32 (OpenVINO when installed,
    else ONNX Runtime; never bf16, so its maps do not depend on the CPU), for whole-stack maps on a CPU (teacher
    maps, threshold tuning): 2.4x torch's speed there for the w8 network with OpenVINO (0.10 against 0.25 s per
    16x128x128 stack on 2 cores), the same maps within 1e-6. A context manager: the network is exported (and
    checked against torch) at the first map, into a temporary folder that lives while it is open, so a run whose
    maps are all cached exports nothing."""

    def __init__(self, checkpoint: str | Path) -> None:
        self.checkpoint = Path(checkpoint)
        self._tmp: Any = None
        self._model: Any = None

    def __enter__(self) -> ExportedNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self._model = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def model(self) -> Any:
        """The exported network (:class:`dmdet_infer.model.Model`, fp32), exported on first use."""
        if self._model is None:
            import tempfile

            from dmdet_infer.model import Model
            from export.onnx_export import export_checkpoint

            self._tmp = tempfile.TemporaryDirectory(prefix="dmdet-export-")
            path = Path(self._tmp.name) / "network.onnx"
            export_checkpoint(self.checkpoint, path, calibration_shape=None)  # checked against torch on export
            self._model = Model(path, device="cpu", precision="fp32")
        return self._model

    def map(self, volume: np.ndarray, flips: bool = False) -> np.ndarray:
        """The network's map of one normalised ZYX volume; with ``flips``, the mean over :data:`TEACHER_FLIPS`,
        each flipped back (as :func:`teacher_map`)."""
        k = self.model.info.stride_zyx
        crop = tuple(slice(0, n) for n in volume.shape)

        def one(v: np.ndarray) -> np.ndarray:
            return np.asarray(self.model.run(pad_to_stride(np.ascontiguousarray(v), k))[crop], np.float32)

        if not flips:
            return one(volume)
        axes = [tuple(d - 2 for d in dims) for dims in TEACHER_FLIPS]  # N, C, Z, Y, X dims -> Z, Y, X axes
        return np.mean([np.flip(one(np.flip(volume, a)), a) if a else one(volume) for a in axes], axis=0)


@torch.no_grad()
def predict_many(model: DetNet3D | ExportedNetwork, volumes: list[np.ndarray], flips: bool = False,
                 batch: int = PREDICT_BATCH) -> list[np.ndarray]:
    """:func:`predict` of each volume, consecutive volumes of one shape run ``batch`` at a time.

    On the CPU, torch runs a 3D convolution of one small volume with its slow unfolding kernel (``slow_conv3d``,
    a column buffer per call: 3.4 s for one 16x128x128 stack of the w8 network here) and a batch with oneDNN
    (0.6 s per stack), so whole-stack passes (validation, teacher maps) go in batches.
    """
    if isinstance(model, ExportedNetwork):
        return [model.map(np.asarray(v, np.float32), flips) for v in volumes]
    device = next(model.parameters()).device
    k = stride(model)
    out: list[np.ndarray] = []
    i = 0
    while i < len(volumes):
        shape = np.shape(volumes[i])
        j = i + 1
        while j < len(volumes) and j - i < batch and np.shape(volumes[j]) == shape:
            j += 1
        x = np.stack([pad_to_stride(np.asarray(v, np.float32), k) for v in volumes[i:j]])
        maps = teacher_map(model, torch.from_numpy(np.ascontiguousarray(x))[:, None].to(device), flips)
        z, y, xx = shape
        out.extend(np.ascontiguousarray(m[0, :z, :y, :xx]) for m in maps.cpu().numpy())
        i = j
    return out


def detections(density: np.ndarray, cfg: TrainConfig, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(coords (N, 3), scores) of the peaks of ``density`` above ``threshold``."""
    from dmdet_infer.peaks import find_peaks

    peaks = find_peaks(density, threshold, cfg.min_distance_zyx, cfg.refine)
    return peaks.coords, peaks.scores


def score_thresholds(
    densities: list[np.ndarray], items: list[Item], cfg: TrainConfig, thresholds: tuple[float, ...]
) -> dict[float, dict[str, Any]]:
    """Mean per-stack scores (training.matching.summarise) at each threshold.

    Peaks are found once at the lowest threshold and filtered by score: local maxima and the greedy
    (score-ordered) suppression do not depend on the threshold, so this equals a run per threshold.
    """
    from training.matching import score, summarise

    lowest = min(thresholds)
    found = [detections(d, cfg, lowest) for d in densities]
    out = {}
    for thr in thresholds:
        scores = [score(c[s > thr], it.positions, cfg.gate) for (c, s), it in zip(found, items)]
        out[float(thr)] = summarise(scores)
    return out


def best_threshold(table: dict[float, dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    """Threshold with the best mean F1 (ties: the lower RMSE, then the middle-most threshold)."""
    def key(t: float) -> tuple:
        s = table[t]
        rmse = s["rmse_mean"] if math.isfinite(s["rmse_mean"]) else 1e9
        return (-round(s["f1_mean"], 6), round(rmse, 6), abs(t - 0.5))

    thr = min(table, key=key)
    return thr, table[thr]


@torch.no_grad()
def validate(
    model: DetNet3D, items: list[Item], cfg: TrainConfig, loss_fn: torch.nn.Module | None = None,
    thresholds: tuple[float, ...] | None = None,
) -> dict[str, Any]:
    """Validation loss (whole stacks, eval mode) and the best mean F1 over ``thresholds``."""
    was_training = model.training
    model.eval()
    densities, losses = [], []
    for it, d in zip(items, predict_many(model, [it.volume for it in items])):
        densities.append(d)
        if loss_fn is not None:
            losses.append(float(loss_fn(torch.from_numpy(d)[None, None], torch.from_numpy(it.target)[None, None])))
    model.train(was_training)
    table = score_thresholds(densities, items, cfg, thresholds or cfg.thresholds)
    thr, best = best_threshold(table)
    return {
        "val_loss": float(np.mean(losses)) if losses else float("nan"),
        "val_f1": best["f1_mean"],
        "val_rmse": best["rmse_mean"],
        "val_threshold": thr,
        "table": table,
    }


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same directory, then rename over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`train` (plain tensors and Python values only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def with_legacy_normalisation(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config; those from before local normalisation (no ``data.normalisation``) get the
    whole-stack median/MAD they were trained with."""
    from training.config import LEGACY_NORMALISATION

    data = dict(config.get("data", {}))
    data.setdefault("normalisation", dict(LEGACY_NORMALISATION))
    return {**config, "data": data}


def model_from_checkpoint(path: str | Path) -> tuple[DetNet3D, TrainConfig, dict[str, Any]]:
    """(model in eval mode, its config, the checkpoint dict)."""
    ckpt = load_checkpoint(path)
    cfg = TrainConfig.from_dict(with_legacy_normalisation(ckpt["config"]))
    model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    return model.eval(), cfg, ckpt


def _write_json(obj: Any, path: Path) -> None:
    import json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Training/validation loss and validation F1 against the step (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [h["train_loss"] for h in history], label="train loss")
    ax.plot(steps, [h["val_loss"] for h in history], label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(steps, [h["val_f1"] for h in history], "g.-", label="val F1 (best threshold)")
    ax2.set_ylabel("F1")
    ax2.set_ylim(0, 1)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


RESUME_MAY_CHANGE = ("max_steps", "max_minutes", "threads", "patience", "val_every", "device", "data_workers")


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """Config keys that must match to resume (budgets and thread counts may change; data keys added since a
    checkpoint was written count at their defaults)."""
    defaults = TrainConfig().to_dict()
    out = {k: v for k, v in {**defaults, **cfg}.items() if k not in RESUME_MAY_CHANGE}
    if isinstance(out.get("data"), dict):
        out["data"] = {**defaults["data"], **out["data"]}
    return out


def _cpu_tree(obj: Any) -> Any:
    """Optimizer state with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu_tree(v) for v in obj]
    return obj


def _is_better(cfg: TrainConfig, val: dict[str, Any], best: float | None) -> tuple[bool, float]:
    value = val["val_f1"] if cfg.monitor == "f1" else -val["val_loss"]
    return (best is None or value > best + 1e-6), value


def train(
    cfg: TrainConfig, out: str | Path, restart: bool = False, progress: bool = True, final_tuning: bool = True
) -> dict[str, Any]:
    """Train (or resume from ``out/last.pt``), then (unless ``final_tuning`` is False) tune the threshold on
    validation (:func:`finalise`); returns the summary."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    cfg.save(out / "config.json")
    device = resolve_device(cfg.device)
    workers = cfg.data_workers or default_workers()

    model = cpu_layout(build_model(cfg).to(device), device)  # before the optimizer: loaded states are copied in
    freeze_norms(model, cfg.norm == "frozen")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), amsgrad=True)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1]))
    step, best, best_step, bad, elapsed, history, position = 0, None, 0, 0, 0.0, [], 0
    resumed = (out / "last.pt").exists() and not restart
    if resumed:
        ck = load_checkpoint(out / "last.pt")
        if _comparable(ck["config"]) != _comparable(cfg.to_dict()):
            raise ValueError(f"{out}/last.pt was written with a different config; use --restart or a new --out")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])  # moves the moments to the parameters' device
        rng.bit_generator.state = ck["np_rng"]
        torch.set_rng_state(ck["torch_rng"])
        step, best, best_step, bad = ck["step"], ck["best_score"], ck["best_step"], ck["bad_validations"]
        elapsed, history = ck["elapsed_s"], list(ck["history"])
        position = int(ck.get("sampler_position", 0))
    elif cfg.init_from:
        state = load_checkpoint(cfg.init_from)["model"]
        model.load_state_dict(matching_state(model, state, cfg.init_slice) if cfg.init_partial or cfg.init_slice
                              else state)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop shape: let cuDNN pick the fastest convolutions
    if progress:
        print(f"training on {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

    teacher = None
    if cfg.teacher:
        teacher = cpu_layout(model_from_checkpoint(cfg.teacher)[0].to(device), device)  # eval, as exported
        for p in teacher.parameters():
            p.requires_grad_(False)
    val_items = load_split(cfg.data, "val", cfg.target, cfg.sigma_zyx, progress, workers)
    if not val_items:
        if cfg.data.source == "annotations":
            raise ValueError(f"the validation split of {cfg.data.folder} is empty ({cfg.data.split_definition()}): "
                             "name validation stacks (--val) or give counts (--counts N_TRAIN,N_VAL)")
        raise ValueError("the validation split is empty: increase data.n_stacks or data.split[1]")
    sampler: CropSampler
    if cfg.data.online:
        sampler = OnlineSampler(cfg.data, cfg.target, cfg.sigma_zyx, cfg.crop, cfg.batch, rng, cfg.flips,
                                cfg.transpose, position)
    else:
        train_items = load_split(cfg.data, "train", cfg.target, cfg.sigma_zyx, progress, workers)
        if not train_items:
            raise ValueError(f"the training split is empty ({cfg.data.split_definition()})")
        if teacher is not None and cfg.teacher_precompute:
            if device.type == "cpu":  # the exported network computes the maps faster
                with ExportedNetwork(cfg.teacher) as fast:
                    train_items = cached_distilled(train_items, fast, cfg, progress)
            else:
                train_items = cached_distilled(train_items, teacher, cfg, progress)
        sampler = CropSampler(train_items, cfg.crop, cfg.batch, rng, cfg.flips, cfg.transpose)
        if cfg.data.source == "annotations":
            stacks = {"train": stack_labels(train_items), "val": stack_labels(val_items)}
            _write_json({"folder": cfg.data.folder, **stacks}, out / "split.json")
            if progress:
                print(f"train: {', '.join(stacks['train'])}; validation: {', '.join(stacks['val'])}")
    loss_fn = make_loss(cfg.loss, cfg.T, cfg.lam, cfg.binary_mode)

    def checkpoint(path: Path) -> None:
        save_atomic(
            {
                "model": cpu_state(model), "optimizer": _cpu_tree(opt.state_dict()), "step": step,
                "np_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "best_score": best, "best_step": best_step, "bad_validations": bad, "elapsed_s": elapsed,
                "history": history, "config": cfg.to_dict(),
                "sampler_position": getattr(sampler, "position", 0),
            },
            path,
        )

    budget_s = cfg.max_minutes * 60.0 if cfg.max_minutes else math.inf
    stop = "max_steps"
    model.train()
    t0 = time.perf_counter() - elapsed
    running: list[float] = []
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not progress, desc="train", dynamic_ncols=True)

    def validate_and_save() -> None:
        """Validate at ``step``, keep ``best.pt`` when it improved, ``last.pt``, the log and the curves."""
        nonlocal elapsed, running, best, best_step, bad
        val = validate(model, val_items, cfg, loss_fn)
        elapsed = time.perf_counter() - t0
        improved, value = _is_better(cfg, val, best)
        history.append({
            "step": step, "train_loss": float(np.mean(running)) if running else float("nan"),
            "val_loss": val["val_loss"], "val_f1": val["val_f1"], "val_rmse": val["val_rmse"],
            "val_threshold": val["val_threshold"], "elapsed_min": elapsed / 60.0,
        })
        running = []
        if improved:
            best, best_step, bad = value, step, 0
            checkpoint(out / "best.pt")
        else:
            bad += 1
        checkpoint(out / "last.pt")
        if cfg.keep_checkpoints:
            checkpoint(out / f"step-{step:06d}.pt")
        _write_json({"config": cfg.to_dict(), "history": history}, out / "log.json")
        plot_curves(history, out / "loss_curve.png")

    try:
        while step < cfg.max_steps:
            if time.perf_counter() - t0 >= budget_s:
                stop = "max_minutes"
                if step > (history[-1]["step"] if history else 0):  # the steps since the last validation count
                    validate_and_save()
                break
            x, y = sampler.sample()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if teacher is not None and not cfg.teacher_precompute:
                with torch.no_grad():
                    blend = torch.lerp(y, teacher_map(teacher, x, cfg.teacher_flips), cfg.teacher_weight)
                    y = torch.maximum(blend, y) if cfg.teacher_floor else blend
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            step += 1
            running.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(running[-50:]):.4g}", best=best)
            if step % cfg.val_every == 0 or step == cfg.max_steps:
                validate_and_save()
                if bad >= cfg.patience:
                    stop = "early_stopping"
                    break
    except KeyboardInterrupt:
        elapsed = time.perf_counter() - t0
        checkpoint(out / "last.pt")
        bar.close()
        raise
    bar.close()
    if not (out / "best.pt").exists():  # stopped before the first validation
        checkpoint(out / "best.pt")
    if not final_tuning:  # e.g. ablations compared on their validation history; the checkpoint keeps no threshold
        return {"stop_reason": stop, "final_tuning": False}
    return finalise(out, cfg, val_items, stop, progress)


def finalise(
    out: Path, cfg: TrainConfig, val_items: list[Item], stop: str = "", progress: bool = False
) -> dict[str, Any]:
    """Tune the threshold of ``out/best.pt`` on the validation items and store it there (and in log.json).

    Also scores the validation split with per-instance normalisation statistics for comparison with the
    running statistics that inference uses.
    """
    import json

    ck = load_checkpoint(out / "best.pt")
    model = build_model(cfg)
    model.load_state_dict(ck["model"])
    model.to(resolve_device(cfg.device)).eval()
    result: dict[str, Any] = {}
    for mode in ("running", "instance"):
        set_norm_mode(model, mode)
        densities = predict_many(model, [it.volume for it in val_items])
        table = score_thresholds(densities, val_items, cfg, FINE_THRESHOLDS)
        result[mode] = best_threshold(table)
    set_norm_mode(model, "running")
    thr, scores = result["running"]
    record_tuning(ck, model, thr, scores, out)
    ck["val_scores_instance_norm"] = {"norm": "instance", "threshold": result["instance"][0],
                                      **result["instance"][1]}
    save_atomic(ck, out / "best.pt")
    summary = {
        "stop_reason": stop, "best_step": ck.get("best_step", ck.get("step")), "threshold": thr,
        "val_scores": ck["val_scores"], "val_scores_instance_norm": ck["val_scores_instance_norm"],
        "stride": ck["stride"], "halo": ck["halo"], "params": ck["params"],
    }
    log_path = out / "log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {"config": cfg.to_dict()}
    log["summary"] = summary
    _write_json(log, log_path)
    if progress:
        print(json.dumps(summary, indent=2, default=float))
    return summary


def stack_labels(items: list[Item]) -> list[str]:
    """The annotated stacks of ``items`` in order, each once (a TZYX stack's frames under its file name)."""
    labels: list[str] = []
    for it in items:
        name = str(it.meta.get("stack", it.meta.get("index")))
        if name not in labels:
            labels.append(name)
    return labels


def record_tuning(ck: dict[str, Any], model: DetNet3D, thr: float, scores: dict[str, Any], run_dir: Path) -> None:
    """Store in checkpoint ``ck`` the threshold tuned on validation (running statistics) with its scores, the
    network's stride, halo and size, and the run's total steps (from ``run_dir/last.pt`` when it exists)."""
    ck["threshold"] = thr
    ck["val_scores"] = {"norm": "running", "threshold": thr, **scores}
    ck["stride"] = list(stride(model))
    ck["halo"] = list(receptive_halo(model))
    ck["params"] = count_params(model)
    if (run_dir / "last.pt").exists():
        ck["total_steps"] = load_checkpoint(run_dir / "last.pt")["step"]


SPLIT_KEYS = ("split", "split_counts", "split_stacks")
FINE_TUNING_CONFIG = Path(__file__).resolve().parent / "configs" / "finetune.json"


def fine_tuning_split() -> dict[str, Any]:
    """The split keys of the shipped fine-tuning config (training/configs/finetune.json): how ``train --data``
    with it splits a folder of annotated stacks when no split is given."""
    data = TrainConfig.load(FINE_TUNING_CONFIG).data
    return {key: getattr(data, key) for key in SPLIT_KEYS}


def evaluation_spec(data: Any, overrides: dict[str, Any] | None = None) -> Any:
    """The data spec a model is scored on: its training data spec ``data`` with ``overrides``.

    A split given in ``overrides`` replaces the whole split definition (a ``split_counts`` drops the spec's
    ``split_stacks`` and the other way round). Annotated stacks (``source`` 'annotations') given to a model
    trained on other data, with no split, are split as the shipped fine-tuning config splits them; a model
    trained on annotated stacks keeps the split definition its training used.
    """
    overrides = dict(overrides or {})
    if not any(k in overrides for k in SPLIT_KEYS):
        if overrides.get("source") == "annotations" and data.source != "annotations":
            overrides.update(fine_tuning_split())
    else:
        overrides = {"split_counts": None, "split_stacks": None, **overrides}
    return dataclasses.replace(data, **overrides)


def run_data(path: str | Path) -> dict[str, Any]:
    """The data spec (as ``evaluation_spec`` overrides) of a training run: ``path`` a run directory (its
    config.json), a config .json, a checkpoint or an exported .onnx model. Every key but the normalisation,
    which belongs to the model being scored."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise ValueError(f"{path.parent} is not a training run directory (no config.json)")
    if path.suffix == ".json":
        cfg = TrainConfig.load(path)
    elif path.suffix == ".onnx":
        from dmdet_infer.model import Model

        cfg = TrainConfig.from_dict(with_legacy_normalisation(Model(path, device="cpu").info.config))
    else:
        cfg = TrainConfig.from_dict(with_legacy_normalisation(load_checkpoint(path)["config"]))
    return {k: v for k, v in dataclasses.asdict(cfg.data).items() if k != "normalisation"}


def evaluate(
    checkpoint: str | Path, split: str = "test", norm: str = "running", threshold: float | str | None = None,
    data_overrides: dict[str, Any] | None = None, config: Any = None,
) -> dict[str, Any]:
    """Scores of a model on one split of its data spec, through the shipped pipeline.

    ``checkpoint``: a training checkpoint (run by :class:`training.runner.TorchModel`) or an exported ``.onnx``
    file (its metadata's training config gives the data spec). Each stack goes through
    :class:`dmdet_infer.Detector` as ``dmdet-infer`` runs it: normalisation, tiling, peaks, refinement, pair split
    and, for an exported model with a noise calibration, the automatic threshold (``threshold`` None: the model's
    default; a number: that fixed cut). The stacks are the ``split`` of the model's training data spec with
    ``data_overrides`` (:func:`evaluation_spec`: a model fine-tuned on annotated stacks keeps its training's split
    definition; :func:`run_data` gives another run's). Reports the scores pooled over the stacks (``pooled``, as
    the benchmarks do), their per-stack means (``all``) and each stack's (``per_stack``, named by ``stack`` for
    annotated stacks), overall and per SNR (binned at PTC levels). ``config``: the detection options
    (:class:`dmdet_infer.config.DetectorConfig`, as ``dmdet-infer --config`` takes them); ``threshold`` overrides
    its threshold."""
    from training.data import raw_split
    from training.matching import pooled, score, summarise
    from training.runner import detector_for

    detector, cfg = detector_for(checkpoint, threshold, norm, config=config)
    spec = evaluation_spec(cfg.data, data_overrides)
    stacks = raw_split(spec, split)
    if not stacks:
        where = spec.folder if spec.source == "annotations" else f"{spec.n_stacks} simulated stacks"
        raise ValueError(f"the {split} split of {where} ({spec.split_definition()}) is empty: nothing to score")
    scores = []
    for volume, positions, meta in stacks:
        spots = detector.detect(volume)
        found = score(spots.zyx, positions, cfg.gate)
        found.update(index=meta.get("index"), n_pred=len(spots), n_true=int(len(positions)),
                     threshold=spots.meta.get("threshold"), mass_cut=spots.meta.get("mass_cut"))
        found.update({k: meta[k] for k in ("stack", "frame") if k in meta})
        scores.append(found)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "split": split, "norm": norm,
                              "data": spec.describe(), "threshold": "auto" if detector.auto else detector.threshold,
                              "pooled": pooled(scores), "all": summarise(scores), "per_stack": scores}
    edges = [0.0, 1.5, 3.0, 5.5, math.inf]  # bins around the PTC levels 1, 2, 4, 7
    snrs = [meta.get("snr") for _, _, meta in stacks]
    if all(s is not None for s in snrs):
        for lo, hi, level in zip(edges[:-1], edges[1:], (1, 2, 4, 7)):
            sel = [s for s, v in zip(scores, snrs) if lo <= v < hi]
            if sel:
                result[f"snr~{level}"] = {"pooled": pooled(sel), **summarise(sel)}
    return result
