"""Finalise a checkpoint on a CPU quickly: the threshold tuned on its validation split with the exported network.

    python -m training.finalise_cpu runs/stage5/best.pt training/checkpoints/NAME.pt

What :func:`training.train.finalise` stores for the running statistics (the mode that inference uses), but the
validation stacks run through the exported network in fp32 (OpenVINO or ONNX Runtime, as ``dmdet_infer`` runs
it; never bf16, so the threshold does not depend on the CPU), which is about 15 times faster than PyTorch eager
on a CPU. For runs whose final tuning was cut short (stage 5 ran out of GPU time). The instance-norm comparison is
not run. The output has no optimizer state (for shipping).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from training.config import TrainConfig
from training.data import load_split
from training.train import (
    FINE_THRESHOLDS,
    ExportedNetwork,
    best_threshold,
    build_model,
    load_checkpoint,
    record_tuning,
    save_atomic,
    score_thresholds,
)


def finalise_cpu(source: str | Path, destination: str | Path, workers: int = 2) -> dict:
    """Tune ``source``'s threshold on its validation split and write the shippable checkpoint ``destination``."""
    source = Path(source)
    ck = load_checkpoint(source)
    cfg = TrainConfig.from_dict(ck["config"])
    t0 = time.perf_counter()
    items = load_split(cfg.data, "val", cfg.target, cfg.sigma_zyx, False, workers)
    with ExportedNetwork(source) as network:  # fp32: the same threshold on every CPU (not bf16)
        densities = [network.map(it.volume) for it in items]
        precision = network.model.precision
    thr, scores = best_threshold(score_thresholds(densities, items, cfg, FINE_THRESHOLDS))
    net = build_model(cfg)
    net.load_state_dict(ck["model"])
    out = {k: v for k, v in ck.items() if k != "optimizer"}
    record_tuning(out, net, thr, scores, source.parent)
    out["finalised"] = "on a CPU with the exported network (training.finalise_cpu); no instance-norm comparison"
    save_atomic(out, Path(destination))
    summary = {"threshold": thr, "val_f1": scores["f1_mean"], "val_stacks": len(items), "precision": precision,
               "seconds": round(time.perf_counter() - t0, 1)}
    print(summary)
    return summary


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m training.finalise_cpu SOURCE.pt DESTINATION.pt")
    finalise_cpu(sys.argv[1], sys.argv[2])
