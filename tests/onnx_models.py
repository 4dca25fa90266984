"""Small dmdet-compatible ONNX models built with ``onnx.helper`` for the tests (no torch, nothing downloaded).

Needs only dmdet_infer, numpy and onnx (never ``training/``), so the inference tests also run against the installed
wheel (tests/wheel_tests.txt).

The "smoothing network" is a fixed anisotropic Gaussian convolution of the normalised input followed by
``sigmoid(gain * (s - centre))``: a crude but honest spot detector whose density map peaks at bright spots. With
``pool=True`` it also max-pools and trilinearly upsamples by 2 in y and x, so inputs must be padded to a stride
of (1, 2, 2) like the real network's (1, 4, 4).
"""

from __future__ import annotations

from itertools import combinations, permutations
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dmdet_infer.metadata import ModelInfo, to_props

OPSET = 17


def gaussian_kernel(sigma_zyx=(1.0, 1.5, 1.5), radius_zyx=(1, 2, 2)) -> np.ndarray:
    axes = [np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2) for s, r in zip(sigma_zyx, radius_zyx)]
    k = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (k / k.sum()).astype(np.float32)


def default_info(**changes) -> ModelInfo:
    values = dict(
        kind="density",
        normalisation={"method": "median_mad"},
        stride_zyx=(1, 1, 1),
        halo_zyx=(1, 2, 2),
        threshold=0.5,
        sigma_zyx=(1.0, 1.5, 1.5),
        min_distance_zyx=(1.0, 1.0, 1.0),
        training_data="none: fixed smoothing network for tests",
        name="test-smoothing",
    )
    values.update(changes)
    return ModelInfo(**values)


def smoothing_model(
    path: str | Path | None = None,
    *,
    pool: bool = False,
    gain: float = 1.5,
    centre: float = 3.0,
    info: ModelInfo | None = None,
    metadata: bool = True,
    rank: int = 5,
) -> onnx.ModelProto:
    """Build (and save to ``path`` when given) the smoothing network."""
    kernel = gaussian_kernel()
    radius = [k // 2 for k in kernel.shape]
    dims = ["N", "C", "Z", "Y", "X"][5 - rank:]
    x = helper.make_tensor_value_info("volume", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("density", TensorProto.FLOAT, dims)
    inits = [
        numpy_helper.from_array(kernel[None, None] if rank == 5 else kernel[None, None, 0], "w"),
        numpy_helper.from_array(np.array(gain, np.float32), "gain"),
        numpy_helper.from_array(np.array(-centre * gain, np.float32), "bias"),
    ]
    pads = (radius + radius) if rank == 5 else (radius[1:] + radius[1:])
    nodes = [helper.make_node("Conv", ["volume", "w"], ["s"], pads=pads)]
    last = "s"
    if pool:
        nodes.append(helper.make_node("MaxPool", ["s"], ["p"], kernel_shape=[1, 2, 2], strides=[1, 2, 2]))
        inits.append(numpy_helper.from_array(np.array([1, 1, 1, 2, 2], np.float32), "scales"))
        nodes.append(helper.make_node("Resize", ["p", "", "scales"], ["u"], mode="linear",
                                      coordinate_transformation_mode="half_pixel"))
        last = "u"
    nodes += [
        helper.make_node("Mul", [last, "gain"], ["g"]),
        helper.make_node("Add", ["g", "bias"], ["b"]),
        helper.make_node("Sigmoid", ["b"], ["density"]),
    ]
    graph = helper.make_graph(nodes, "smoothing", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dmdet-tests")
    model.ir_version = 8
    if metadata:
        if info is None:
            info = default_info(stride_zyx=(1, 2, 2), halo_zyx=(1, 4, 4)) if pool else default_info()
        helper.set_model_props(model, to_props(info))
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model


def gaussian_spots(shape, positions, sigma_zyx, amplitude=1.0, truncate=4.0, combine="sum") -> np.ndarray:
    """Gaussian spots (peak ``amplitude`` at a voxel-centred spot) rendered in local boxes, summed or (``"max"``, as
    ``training.targets.density_target``) their voxel-wise maximum; float64 ZYX.

    The same numbers as ``training.simulate.render_spots`` (tests/test_simulate.py checks), here so that the tests
    need no ``training/``.
    """
    shape = tuple(int(s) for s in shape)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    out = np.zeros(int(np.prod(shape)), dtype=np.float64)
    if len(pos) == 0:
        return out.reshape(shape)
    amp = np.broadcast_to(np.asarray(amplitude, dtype=np.float64), (len(pos),))
    profiles = []
    for a in range(3):  # per spot and axis: voxel indices (N, w) and profile values (N, w), 0 outside the volume
        r = int(np.ceil(truncate * float(sigma_zyx[a])))
        if 2 * r + 1 >= shape[a]:
            idx = np.broadcast_to(np.arange(shape[a]), (len(pos), shape[a]))
        else:
            idx = (np.floor(pos[:, a] + 0.5).astype(np.int64) - r)[:, None] + np.arange(2 * r + 1)
        g = np.exp(-0.5 * ((idx - pos[:, a, None]) / float(sigma_zyx[a])) ** 2)
        profiles.append((np.clip(idx, 0, shape[a] - 1), np.where((idx >= 0) & (idx < shape[a]), g, 0.0)))
    (iz, gz), (iy, gy), (ix, gx) = profiles
    step = max(1, 2_000_000 // (iz.shape[1] * iy.shape[1] * ix.shape[1]))
    for s in range(0, len(pos), step):
        sl = slice(s, s + step)
        vals = (amp[sl, None, None, None] * gz[sl, :, None, None]) * (gy[sl, None, :, None] * gx[sl, None, None, :])
        flat = (iz[sl, :, None, None] * shape[1] + iy[sl, None, :, None]) * shape[2] + ix[sl, None, None, :]
        if combine == "sum":
            out += np.bincount(flat.ravel(), weights=vals.ravel(), minlength=out.size)
        else:
            np.maximum.at(out, flat.ravel(), vals.ravel())
    return out.reshape(shape)


def amplitude_from_snr(snr: float, background: float) -> float:
    """Spot amplitude for SNR = (I_peak - I_bg) / sqrt(I_peak), as ``training.simulate.amplitude_from_snr``."""
    return float(((snr + np.sqrt(snr * snr + 4.0 * background)) / 2.0) ** 2 - background)


def match_spots(found, truth, gate=5.0):
    """``training.matching.match`` without scipy: (found_idx, true_idx, dist) of the optimal one-to-one matching
    (pairs strictly closer than ``gate``; most pairs, then least total distance), sorted by found index.

    Each connected group of found and true spots (linked by pairs closer than ``gate``) is matched on its own by
    trying every assignment, so the groups must be small, which is asserted (at most 4 spots of either kind).
    """
    f, t = (np.asarray(a, dtype=np.float64).reshape(-1, 3) for a in (found, truth))
    dist = np.linalg.norm(f[:, None] - t[None], axis=-1)
    near = dist < gate
    seen_f, out = np.zeros(len(f), bool), []
    for start in np.flatnonzero(near.any(axis=1)):
        if seen_f[start]:
            continue
        fi, ti = {int(start)}, set()
        while True:  # grow the group until no pair links it to another spot
            grown_t = set(np.flatnonzero(near[sorted(fi)].any(axis=0)).tolist())
            grown_f = set(np.flatnonzero(near[:, sorted(grown_t)].any(axis=1)).tolist())
            if grown_t == ti and grown_f == fi:
                break
            fi, ti = grown_f, grown_t
        seen_f[sorted(fi)] = True
        fi, ti = sorted(fi), sorted(ti)
        assert max(len(fi), len(ti)) <= 4, "match_spots: a group too large to try every assignment"
        for k in range(min(len(fi), len(ti)), 0, -1):  # most pairs first, then the least total distance
            options = [list(zip(a, b)) for a in combinations(fi, k) for b in permutations(ti, k)
                       if all(near[i, j] for i, j in zip(a, b))]
            if options:
                out += min(options, key=lambda pairs: sum(dist[i, j] for i, j in pairs))
                break
    pi, ti = (np.array(sorted(out), dtype=np.int64).reshape(-1, 2).T)
    return pi, ti, dist[pi, ti]


def score_spots(found, truth, gate=5.0) -> dict:
    """``training.matching.score`` on ``match_spots``: tp, fp, fn, f1 and rmse of the matched pairs."""
    n_found, n_true = len(np.asarray(found).reshape(-1, 3)), len(np.asarray(truth).reshape(-1, 3))
    d = match_spots(found, truth, gate)[2]
    tp = len(d)
    denom = n_found + n_true
    return {"tp": tp, "fp": n_found - tp, "fn": n_true - tp, "f1": 2 * tp / denom if denom else 1.0,
            "rmse": float(np.sqrt(np.mean(d**2))) if tp else float("nan")}


def render_spots(shape, positions, amplitude=60.0, background=10.0, sigma_zyx=(1.0, 1.5, 1.5), seed=0,
                 noise=True) -> np.ndarray:
    """A small synthetic stack (Poisson noise) with Gaussian spots at ``positions`` (N,3 zyx)."""
    image = background + gaussian_spots(shape, positions, tuple(sigma_zyx), amplitude)
    if noise:
        image = np.random.default_rng(seed).poisson(image)
    return image.astype(np.float32)
