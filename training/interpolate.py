"""Weight-space interpolation of a model and its fine-tune (WiSE-FT, Wortsman et al., CVPR 2022).

    python -m training.interpolate BASE.pt TUNED.pt --alpha 0.5 -o MIX.pt

``(1 - alpha) * BASE + alpha * TUNED`` for every floating-point tensor of the two state dicts (same architecture;
the tuned run must start from the base's weights, so that both lie in one basin). The paper finds such mixes more
robust to distribution shift than either end; for stage 5 and its CPU fine-tune every validation condition landed
between the two ends (BENCHMARKS.md, stage 6), so it is a tool to try, not a default. Frozen normalisation
statistics are equal in both and stay as they are. The output takes the tuned checkpoint's config and threshold,
records where it came from (``interpolated``) and has no optimizer state; tune its threshold with
``python -m training.finalise_cpu`` before shipping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def interpolate_states(base: dict[str, Any], tuned: dict[str, Any], alpha: float) -> dict[str, Any]:
    """``(1 - alpha) * base + alpha * tuned`` per floating-point tensor; other entries (counters) from ``tuned``."""
    import torch

    if set(base) != set(tuned):
        raise ValueError(f"the two models differ in their tensors: {sorted(set(base) ^ set(tuned))[:4]}")
    out = {}
    for name, b in tuned.items():
        a = base[name]
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"{name}: shape {tuple(a.shape)} against {tuple(b.shape)}")
        out[name] = torch.lerp(a, b, float(alpha)) if torch.is_floating_point(b) else b.clone()
    return out


def interpolate(base: str | Path, tuned: str | Path, alpha: float, destination: str | Path) -> dict[str, Any]:
    """Write the checkpoint of ``(1 - alpha) * base + alpha * tuned`` to ``destination``; returns it."""
    from training.config import TrainConfig
    from training.train import load_checkpoint, save_atomic

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    a, b = load_checkpoint(base), load_checkpoint(tuned)
    ca, cb = TrainConfig.from_dict(a["config"]), TrainConfig.from_dict(b["config"])  # older ones: defaults filled
    for key in ("width", "levels", "z_pool", "stem"):
        va, vb = getattr(ca, key), getattr(cb, key)
        if va != vb:
            raise ValueError(f"config {key} differs: {va!r} against {vb!r}")
    out = {k: v for k, v in b.items() if k != "optimizer"}
    out["model"] = interpolate_states(a["model"], b["model"], alpha)
    out["config"] = {**b["config"], "name": f"{b['config'].get('name', 'model')}-wise{alpha:g}"}
    out["interpolated"] = {"base": str(base), "tuned": str(tuned), "alpha": float(alpha),
                           "base_step": a.get("step"), "tuned_step": b.get("step")}
    out.pop("finalised", None)
    save_atomic(out, Path(destination))
    return out


@click.command()
@click.argument("base", type=click.Path(exists=True, dir_okay=False))
@click.argument("tuned", type=click.Path(exists=True, dir_okay=False))
@click.option("--alpha", type=click.FloatRange(0.0, 1.0), required=True, help="weight of TUNED (0: BASE, 1: TUNED)")
@click.option("-o", "--out", "destination", type=click.Path(dir_okay=False), required=True)
def main(base: str, tuned: str, alpha: float, destination: str) -> None:
    """Write (1 - ALPHA) * BASE + ALPHA * TUNED (two checkpoints of one architecture) to OUT."""
    try:
        interpolate(base, tuned, alpha, destination)
    except (ValueError, KeyError) as err:
        raise click.ClickException(f"{base}, {tuned}: {err}") from None
    click.echo(f"wrote {destination} ({1 - alpha:g} x {base} + {alpha:g} x {tuned})")


if __name__ == "__main__":
    main()
