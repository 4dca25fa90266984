"""Spotiflow 3D as a deep-learning peer on the generalisation benchmark (issue 14, optional item); runs outside CI.

Spotiflow (Dominguez Mantes et al., 2024) is trained here on dmdet's own training generator, the stage-5 mix of
``training/configs/general_w8_gpu.json`` (``training.data.simulate_item``, the data dmdet's shipped model was
trained on), then scored on the exact test stacks of ``benchmarks/generalisation.py`` beside dmdet's default
detector. Nothing of it is tuned on any generalisation stack.

Environment (its own, outside the repository; never installed or run by CI, imported by no test)::

    python3 -m venv /work/spotiflow_env
    /work/spotiflow_env/bin/pip install torch==2.14.1 torchvision==0.29.1
    printf 'torch==2.14.1\\ntorchvision==0.29.1\\n' > /work/spotiflow_constraints.txt
    /work/spotiflow_env/bin/pip install -c /work/spotiflow_constraints.txt spotiflow numpy scipy tifffile \\
        sim-fish scikit-image

(spotiflow 0.6.5 was used; the constraint keeps pip from replacing torch.) ``training`` and ``benchmarks`` are
imported from this checkout; they need only numpy and scipy there.

Run, Spotiflow part (in its environment, one thread; trains, tunes, evaluates, writes OUT.json and OUT.md)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 /work/spotiflow_env/bin/python benchmarks/spotiflow_peer.py \\
        --run-dir /work/spotiflow_run --train-minutes 40 [--n-train 360] [--n-val 40] \\
        [--out benchmarks/results/spotiflow_peer] [--skip-train]

then dmdet's part on the same stacks, in the project's environment (adds dmdet's rows and its time on the same
10x512x512 stack to OUT.json, rewrites OUT.md)::

    nice -n 10 .venv/bin/python benchmarks/spotiflow_peer.py --dmdet [--out benchmarks/results/spotiflow_peer]

Steps of the Spotiflow part:

1. Data: items ``0 .. n_train-1`` (training split of the config) and ``7760 .. 7760+n_val-1`` (its validation
   split, disjoint) of ``simulate_item(TrainConfig.load(general_w8_gpu.json).data, index)``, 16x128x128 each,
   positions zyx in voxels. Spotiflow normalises them itself (its default percentile normalisation, 1 / 99.8 %).
2. Training: ``Spotiflow(SpotiflowModelConfig(is_3d=True, grid=(2, 2, 2), levels=3))``, library defaults otherwise
   (3D U-Net, 32 feature maps, sigma 1, stereographic flow). grid 2 ("g" of the paper) is what the command
   ``spotiflow-train --is-3d`` uses; with it, 4 levels would need crops of 32 slices, and the generator's items
   have 16, hence 3 levels. The plain ``SpotiflowModelConfig(is_3d=True)`` (grid 1, 4 levels, 35.5 M parameters)
   took 96 s per training step of 4 crops on one CPU thread here, about 12 x this one (8.9 M parameters), too
   slow for any useful training within the time limit. ``SpotiflowTrainingConfig()`` defaults (batch 4, lr 3e-4, BCE
   heatmap loss with positive weight 10, L1 flow loss, default 3D augmentations), on the CPU, stopped after
   ``--train-minutes`` of wall time by Lightning's Timer; Spotiflow keeps the model of lowest validation loss
   ("best") in ``RUN_DIR/model``.
3. Threshold: Spotiflow's ``optimize_threshold`` is not used (in 3D with sub-pixel refinement it pairs each crop
   with the last crop's flow in 0.6.5); instead each validation item is predicted once at ``prob_thresh`` 0.05 and
   the threshold with the best pooled F1 (``training.matching.score``, 5-voxel gate) over the subsets
   ``prob >= t``, t = 0.05 .. 0.95 in steps of 0.025, is kept.
4. Evaluation: ``benchmarks/_generators.make_stack(condition, "test", i, seed=2024)``, i = 0..4, every condition of
   ``CONDITIONS``: the test stacks of generalisation.py's table. ``model.predict(volume as float32,
   prob_thresh=t)`` with every other option at its default (sub-pixel flow on, one tile). Pooled TP/FP/FN,
   precision, recall, F1, RMSE over matched pairs (``training.matching.score``, distance below 5 voxels), wall
   seconds per stack after an untimed warm-up. Speed: the 10x512x512 SNR-4 stack of benchmarks/detect_speed.py
   (500 particles, ``training.simulate``, rng 7), the median of 3 runs after a warm-up.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _generators as gen  # noqa: E402
from benchmarks.generalisation import _pool  # noqa: E402
from training.matching import score  # noqa: E402

CONFIG = ROOT / "training" / "configs" / "general_w8_gpu.json"
GATE = 5.0
SEED = 2024
N_TEST = 5
VAL_START = 7760  # first index of the config's validation split (0.97 x 8000)
LOW_THRESH = 0.05
MODEL_KW = {"grid": (2, 2, 2), "levels": 3}  # spotiflow-train's 3D grid; 3 levels fit 16 slices (see docstring)
THRESHOLDS = tuple(round(float(t), 3) for t in np.arange(0.05, 0.951, 0.025))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


# ------------------------------------------------------------------------------------------------ data


def generator_items(indices: Sequence[int]) -> tuple[list[np.ndarray], list[np.ndarray], list[dict]]:
    """Raw volumes (float32), positions (N, 3) zyx and short metadata of the training generator's items."""
    from training.config import TrainConfig
    from training.data import simulate_item

    spec = TrainConfig.load(CONFIG).data
    vols, pts, metas = [], [], []
    for i in indices:
        volume, positions, meta = simulate_item(spec, int(i))
        vols.append(np.asarray(volume, np.float32))
        pts.append(np.asarray(positions, np.float32).reshape(-1, 3))
        metas.append({"index": int(i), "generator": meta.get("generator", "ptc"), "snr": meta.get("snr")})
    return vols, pts, metas


def speed_stack() -> np.ndarray:
    """benchmarks/detect_speed.py's stack: 10x512x512, 500 particles, SNR 4, rng 7."""
    from training.simulate import SimParams, simulate

    volume, _ = simulate(SimParams(shape=(10, 512, 512), n_particles=500, snr=4.0), np.random.default_rng(7))
    return volume


def test_stacks():
    """(condition, index, volume, truth) of every generalisation test stack, generated on demand."""
    for name, cond in gen.CONDITIONS.items():
        for i in range(N_TEST):
            vol, truth = gen.make_stack(cond, "test", i, SEED)
            yield name, i, vol, truth


def evaluate(detect: Callable[[np.ndarray], np.ndarray], label: str) -> dict:
    """Pooled scores per condition of ``detect`` (volume in its stored dtype -> (N, 3) zyx)."""
    out: dict[str, dict] = {}
    warmed = False
    for name, i, vol, truth in test_stacks():
        if not warmed:  # untimed warm-up on a crop
            detect(np.ascontiguousarray(vol[:, :64, :64]))
            warmed = True
        t0 = time.perf_counter()
        pred = np.asarray(detect(vol), np.float64).reshape(-1, 3)
        seconds = time.perf_counter() - t0
        s = score(pred, truth, GATE)
        stacks = out.setdefault(name, {"shape": list(vol.shape), "dtype": str(vol.dtype), "stacks": []})["stacks"]
        stacks.append({**s, "seconds": seconds, "n_pred": int(len(pred)), "n_true": int(len(truth))})
        log(f"{label} {name} test {i}: F1 {s['f1']:.3f} ({len(pred)} found, {len(truth)} true) {seconds:.2f} s")
    return {name: {**_pool(v["stacks"]), "shape": v["shape"], "dtype": v["dtype"],
                   "n_true": int(sum(s["n_true"] for s in v["stacks"])), "per_stack": v["stacks"]}
            for name, v in out.items()}


def time_speed_stack(detect: Callable[[np.ndarray], np.ndarray], repeats: int = 3) -> dict:
    vol = speed_stack()
    detect(vol)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred = detect(vol)
        times.append(time.perf_counter() - t0)
    return {"shape": list(vol.shape), "dtype": str(vol.dtype), "median_s": statistics.median(times),
            "seconds": times, "n_found": int(len(pred)), "load_average": _load_average()}


# ------------------------------------------------------------------------------------------------ spotiflow


def _spotiflow_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already set once
        pass


def train_spotiflow(run_dir: Path, train: tuple, val: tuple, minutes: float, threads: int) -> dict:
    import lightning.pytorch as pl
    from spotiflow.model import Spotiflow, SpotiflowModelConfig, SpotiflowTrainingConfig

    _spotiflow_threads(threads)  # after importing spotiflow

    class EpochLog(pl.Callback):
        def __init__(self) -> None:
            self.history: list[dict] = []
            self.t0 = time.perf_counter()

        def _record(self, trainer, hook: str) -> None:
            m = {k: float(v) for k, v in trainer.callback_metrics.items()}
            row = {"hook": hook, "epoch": int(trainer.current_epoch), "step": int(trainer.global_step),
                   "minutes": (time.perf_counter() - self.t0) / 60, **m}
            self.history.append(row)
            log(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))

        def on_validation_epoch_end(self, trainer, pl_module) -> None:  # before the module's: val_loss only
            if not trainer.sanity_checking:
                self._record(trainer, "validation_epoch_end")

        def on_train_epoch_end(self, trainer, pl_module) -> None:  # train and validation metrics of the epoch
            self._record(trainer, "train_epoch_end")

    torch_seed = 0
    pl.seed_everything(torch_seed, workers=True)
    model = Spotiflow(SpotiflowModelConfig(is_3d=True, **MODEL_KW))
    train_config = SpotiflowTrainingConfig()
    epoch_log = EpochLog()
    timer = pl.callbacks.Timer(duration=_dt.timedelta(minutes=minutes), interval="step")
    t0 = time.perf_counter()
    model.fit(train[0], train[1], val[0], val[1], save_dir=str(run_dir / "model"), train_config=train_config,
              device="cpu", logger="tensorboard", logging_name="spotiflow_peer", num_workers=0,
              callbacks=[timer, epoch_log])
    seconds = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    return {"model_kw": {k: list(v) if isinstance(v, tuple) else v for k, v in MODEL_KW.items()},
            "model_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(model.config).items()},
            "train_config": dict(vars(train_config)), "train_minutes_limit": minutes,
            "train_seconds": seconds, "history": epoch_log.history, "parameters": int(n_params), "seed": torch_seed}


def load_spotiflow(run_dir: Path, threads: int):
    from spotiflow.model import Spotiflow

    model = Spotiflow.from_folder(str(run_dir / "model"), which="best", map_location="cpu")
    _spotiflow_threads(threads)
    model.eval()
    return model


def spotiflow_detect(model, prob_thresh: float) -> Callable[[np.ndarray], np.ndarray]:
    def detect(volume: np.ndarray) -> np.ndarray:
        pts, _ = model.predict(np.asarray(volume, np.float32), prob_thresh=prob_thresh, verbose=False,
                               device="cpu")
        return np.asarray(pts, np.float64).reshape(-1, 3)

    return detect


def tune_threshold(model, vols: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> dict:
    """The threshold of best pooled validation F1 over subsets ``prob >= t`` of one low-threshold prediction."""
    preds = []
    for vol in vols:
        pts, details = model.predict(vol, prob_thresh=LOW_THRESH, verbose=False, device="cpu")
        preds.append((np.asarray(pts, np.float64).reshape(-1, 3), np.asarray(details.prob, np.float64).ravel()))
    curve = {}
    for t in THRESHOLDS:
        stacks = [{**score(p[prob >= t], truth, GATE), "seconds": 0.0} for (p, prob), truth in zip(preds, truths)]
        curve[t] = _pool(stacks)
    best = max(THRESHOLDS, key=lambda t: (curve[t]["f1"], -abs(t - 0.5)))
    return {"threshold": best, "val": curve[best],
            "curve": {str(t): {k: curve[t][k] for k in ("precision", "recall", "f1")} for t in THRESHOLDS}}


def tensorboard_scalars(run_dir: Path) -> dict[str, list[list[float]]]:
    """(step, value) of every scalar Lightning logged to TensorBoard under RUN_DIR/model (epoch means)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[list[float]]] = {}
    for path in sorted((run_dir / "model").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend([int(e.step), float(e.value)] for e in acc.Scalars(tag))
    return out


def run_spotiflow(args: argparse.Namespace) -> dict:
    import spotiflow
    import torch

    _spotiflow_threads(args.threads)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_idx = list(range(args.n_train))
    val_idx = list(range(VAL_START, VAL_START + args.n_val))
    train = generator_items(train_idx)
    val = generator_items(val_idx)
    data = {"config": str(CONFIG.relative_to(ROOT)), "train_indices": [train_idx[0], train_idx[-1]],
            "val_indices": [val_idx[0], val_idx[-1]], "n_train": len(train_idx), "n_val": len(val_idx),
            "shape": list(train[0][0].shape), "train_spots": int(sum(len(p) for p in train[1])),
            "val_spots": int(sum(len(p) for p in val[1])),
            "train_generators": {g: sum(m["generator"] == g for m in train[2]) for g in ("ptc", "microscopy")},
            "seconds": time.perf_counter() - t0}
    log(f"data: {data}")
    info_path = run_dir / "training.json"
    if args.skip_train and info_path.exists():
        training = json.loads(info_path.read_text())
        log("training skipped: the model in RUN_DIR/model is reused")
    else:
        training = train_spotiflow(run_dir, train[:2], val[:2], args.train_minutes, args.threads)
        training["tensorboard_scalars"] = tensorboard_scalars(run_dir)
        _write_atomic(info_path, json.dumps(training, indent=1, default=str))
    del train
    model = load_spotiflow(run_dir, args.threads)
    t0 = time.perf_counter()
    tuned = tune_threshold(model, val[0], val[1])
    tuned["seconds"] = time.perf_counter() - t0
    log(f"threshold {tuned['threshold']}: validation F1 {tuned['val']['f1']:.3f} "
        f"(P {tuned['val']['precision']:.3f} R {tuned['val']['recall']:.3f})")
    detect = spotiflow_detect(model, tuned["threshold"])
    results = evaluate(detect, "spotiflow")
    speed = time_speed_stack(detect)
    log(f"spotiflow 10x512x512: {speed['median_s']:.2f} s (load {speed['load_average']})")
    return {"date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "git": _git_commit(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
                        "python": platform.python_version(), "torch": torch.__version__,
                        "spotiflow": spotiflow.__version__, "numpy": np.__version__},
            "seed": SEED, "n_test": N_TEST, "gate": GATE, "data": data, "training": training,
            "threshold": tuned, "methods": {"spotiflow": {"results": results, "speed_10x512x512": speed}}}


# ------------------------------------------------------------------------------------------------ dmdet


def run_dmdet(report: dict) -> dict:
    from dmdet_infer import Detector

    det = Detector()
    det.warmup()

    def detect(volume: np.ndarray) -> np.ndarray:
        return np.asarray(det.detect(volume).zyx, np.float64).reshape(-1, 3)

    results = evaluate(detect, "dmdet")
    speed = time_speed_stack(detect)
    log(f"dmdet 10x512x512: {speed['median_s']:.2f} s (load {speed['load_average']})")
    report["methods"]["dmdet"] = {"results": results, "speed_10x512x512": speed,
                                  "model": "dmdet_infer default (Detector() with every option at its default)",
                                  "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                  "git": _git_commit()}
    return report


# ------------------------------------------------------------------------------------------------ report


def markdown(report: dict) -> str:
    methods = [m for m in ("dmdet", "spotiflow") if m in report["methods"]]
    tr, th, data = report["training"], report["threshold"], report["data"]
    hist = tr.get("history") or [{}]
    last = hist[-1]
    mach = report["machine"]
    kw = ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in tr.get("model_kw", {}).items())
    batch = tr.get("train_config", {}).get("batch_size", 4)
    epochs = last.get("step", 0) * batch / max(data["n_train"], 1)
    scalars = {k: v[-1][1] for k, v in tr.get("tensorboard_scalars", {}).items() if v}  # (step, value) pairs
    final = {**last, **scalars}
    losses = ", ".join(f"final {k.replace('_', ' ')} {final[k]:.4f}" for k in ("train_loss", "val_loss") if k in final)
    lines = [
        "# Spotiflow 3D beside dmdet on the generalisation test stacks (benchmarks/spotiflow_peer.py)", "",
        f"Spotiflow {mach['spotiflow']} (torch {mach['torch']}, CPU, {mach['threads']} thread), trained on dmdet's "
        f"training generator ({data['config']}, stage-5 mix): {data['n_train']} items "
        f"{'x'.join(map(str, data['shape']))} (indices {data['train_indices'][0]}-{data['train_indices'][1]}), "
        f"validation {data['n_val']} items (indices {data['val_indices'][0]}-{data['val_indices'][1]}); "
        f"SpotiflowModelConfig(is_3d=True, {kw}), library defaults otherwise (3D U-Net, "
        f"{tr.get('parameters', 0) / 1e6:.2f} M parameters), {tr['train_seconds'] / 60:.1f} min of training on "
        f"the CPU ({last.get('step', 0)} steps of batch {batch}, {epochs:.1f} epochs; {losses}). "
        f"Probability threshold {th['threshold']} tuned on the generator's validation items (pooled F1 "
        f"{th['val']['f1']:.3f}); nothing tuned on any generalisation stack.",
        "",
        f"Test stacks: benchmarks/_generators.py, seed {report['seed']}, {report['n_test']} per condition (those of "
        "benchmarks/generalisation.py). Scores pooled over the test stacks (TP/FP/FN summed; training.matching.score, "
        f"{report['gate']:g}-voxel gate); RMSE in voxels; s/stack = wall seconds per test stack after a warm-up. "
        "dmdet: `Detector().detect(volume)` with every option at its default.", "",
    ]
    head = "| condition | stack | n |"
    sep = "|---|---|---|"
    for m in methods:
        head += f" {m} F1 (P / R) | {m} RMSE | {m} s/stack |"
        sep += "---|---|---|"
    lines += [head, sep]
    first = report["methods"][methods[-1]]["results"]
    for name in first:
        r0 = first[name]
        row = f"| {name} | {'x'.join(map(str, r0['shape']))} {r0['dtype']} | {r0['n_true']} |"
        for m in methods:
            r = report["methods"][m]["results"][name]
            rmse = "n/a" if not r["tp"] else f"{r['rmse']:.2f}"
            row += (f" {r['f1']:.3f} ({r['precision']:.2f} / {r['recall']:.2f}) | {rmse} |"
                    f" {r['seconds_per_stack']:.2f} |")
        lines.append(row)
    lines += ["", "One 10x512x512 SNR-4 stack (benchmarks/detect_speed.py's), median of 3 after a warm-up:", "",
              "| method | seconds | found | load average (1/5/15 min) |", "|---|---|---|---|"]
    for m in methods:
        s = report["methods"][m]["speed_10x512x512"]
        load = "/".join(f"{v:.2f}" for v in s["load_average"])
        lines.append(f"| {m} | {s['median_s']:.2f} | {s['n_found']} | {load} |")
    lines += ["", f"Run {report['date_utc']}, git {report['git']}"
              + (f"; dmdet part {report['methods']['dmdet']['date_utc']}" if "dmdet" in methods else "") + ".", ""]
    return "\n".join(lines)


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def write(report: dict, out: str) -> None:
    _write_atomic(Path(f"{out}.json"), json.dumps(_clean(report), indent=1, default=str))
    text = markdown(report)
    _write_atomic(Path(f"{out}.md"), text)
    print(text)
    log(f"wrote {out}.json, {out}.md")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "spotiflow_peer"))
    p.add_argument("--run-dir", default="/work/spotiflow_run", help="model, logs (outside the repository)")
    p.add_argument("--train-minutes", type=float, default=40.0)
    p.add_argument("--n-train", type=int, default=360)
    p.add_argument("--n-val", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-train", action="store_true", help="reuse RUN_DIR/model and RUN_DIR/training.json")
    p.add_argument("--dmdet", action="store_true", help="project venv: add dmdet's rows to OUT.json")
    args = p.parse_args(argv)
    if args.dmdet:
        report = json.loads(Path(f"{args.out}.json").read_text())
        write(run_dmdet(report), args.out)
    else:
        write(run_spotiflow(args), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
