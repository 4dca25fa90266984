"""Small dmdet-compatible ONNX models built with ``onnx.helper`` for the tests (no torch, nothing downloaded).

The "smoothing network" is a fixed anisotropic Gaussian convolution of the normalised input followed by
``sigmoid(gain * (s - centre))``: a crude but honest spot detector whose density map peaks at bright spots. With
``pool=True`` it also max-pools and trilinearly upsamples by 2 in y and x, so inputs must be padded to a stride
of (1, 2, 2) like the real network's (1, 4, 4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dmdet_infer.metadata import ModelInfo, to_props
from training import simulate

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


def render_spots(shape, positions, amplitude=60.0, background=10.0, sigma_zyx=(1.0, 1.5, 1.5), seed=0,
                 noise=True) -> np.ndarray:
    """A small synthetic stack (Poisson noise) with Gaussian spots at ``positions`` (N,3 zyx)."""
    image = background + simulate.render_spots(tuple(shape), np.asarray(positions, float).reshape(-1, 3),
                                                tuple(sigma_zyx), amplitude)
    if noise:
        image = np.random.default_rng(seed).poisson(image)
    return image.astype(np.float32)
