"""DM-DetNet3D network: a slim 3D DetNet hourglass without long skip connections (method.md §2).

enc(w) -> pool -> enc(2w) -> pool -> bottleneck(4w) -> up -> dec(2w) -> up -> dec(w) -> 1x1x1 conv -> sigmoid.
Pooling and upsampling are (1, 2, 2) by default: PTC stacks have only 10 slices, so z is never pooled.

``stem=True`` (the cheap variant of issue 15) runs the hourglass at half the xy resolution: a (1, 2, 2)-strided
3x3x3 conv in, the hourglass, a trilinear upsampling back, and one full-resolution 3x3x3 conv that also sees the
input (for the sub-voxel position) before the head: about a third of the convolutions' work (23 against 68 GMAC
on 10x512x512 at width 8).

Normalisation is :class:`InstanceNorm` (``InstanceNorm3d(affine=True, track_running_stats=True)``): per-instance
statistics while training (as in the paper), running statistics in ``eval()``; :func:`freeze_norms` trains with
the running statistics fixed (config ``norm: "frozen"``, the fine-tuning stage of the shipped model). With running
statistics the network is a purely local operator, which is what exact tiled inference needs;
:func:`set_norm_mode` switches evaluation to per-instance statistics to measure what that costs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InstanceNorm(nn.InstanceNorm3d):
    """InstanceNorm3d(affine, running statistics) whose eval mode can use per-instance statistics instead.

    ``use_instance_stats_in_eval`` (set by :func:`set_norm_mode`) never updates the running statistics, unlike
    toggling ``track_running_stats`` on the stock module (which updates them during eval forwards).
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, affine=True, track_running_stats=True)
        self.use_instance_stats_in_eval = False
        self.frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:  # the exported operator: fixed running statistics, trainable affine
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        if self.training or not self.use_instance_stats_in_eval:
            return super().forward(x)
        return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class Block(nn.Module):
    """Three 3x3x3 convs, each conv -> ReLU -> InstanceNorm; output = conv1_out + conv3_out."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(3):
            self.layers.append(
                nn.Sequential(
                    nn.Conv3d(in_ch if i == 0 else out_ch, out_ch, kernel_size=3, padding=1),
                    nn.ReLU(inplace=True),
                    InstanceNorm(out_ch),
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.layers[0](x)
        return first + self.layers[2](self.layers[1](first))


class DetNet3D(nn.Module):
    """Slim 3D hourglass; input (B, in_ch, Z, Y, X) with sizes multiple of :func:`stride`, output same shape."""

    def __init__(
        self, width: int = 16, in_ch: int = 1, out_ch: int = 1, levels: int = 3, z_pool: bool = False,
        stem: bool = False,
    ) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.width = width
        self.levels = levels
        self.z_pool = z_pool
        self.stem = stem
        self.scale = (2 if z_pool else 1, 2, 2)
        widths = [width * 2**i for i in range(levels)]
        self.encoders = nn.ModuleList()
        ch = in_ch
        if stem:
            self.entry = nn.Sequential(nn.Conv3d(in_ch, width, 3, stride=(1, 2, 2), padding=1), nn.ReLU(inplace=True),
                                       InstanceNorm(width))
            self.full = nn.Sequential(nn.Conv3d(width + in_ch, width, 3, padding=1), nn.ReLU(inplace=True),
                                      InstanceNorm(width))
            ch = width
        for w in widths:  # last one is the bottleneck
            self.encoders.append(Block(ch, w))
            ch = w
        self.decoders = nn.ModuleList(Block(widths[i + 1], widths[i]) for i in reversed(range(levels - 1)))
        self.pool = nn.MaxPool3d(self.scale, self.scale)
        self.up = nn.Upsample(scale_factor=self.scale, mode="trilinear", align_corners=False)
        self.head = nn.Conv3d(width, out_ch, kernel_size=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Output before the sigmoid."""
        h = self.entry(x) if self.stem else x
        for i, enc in enumerate(self.encoders):
            if i > 0:
                h = self.pool(h)
            h = enc(h)
        for dec in self.decoders:
            h = dec(self.up(h))
        if self.stem:
            h = self.full(torch.cat([F.interpolate(h, size=x.shape[2:], mode="trilinear", align_corners=False), x], 1))
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def set_norm_mode(model: nn.Module, mode: str) -> None:
    """Evaluate with ``"running"`` statistics (local operator, the exported default) or per-``"instance"`` ones.

    Only affects eval mode; training always normalises per instance.
    """
    if mode not in ("running", "instance"):
        raise ValueError(f"norm mode must be 'running' or 'instance', got {mode!r}")
    for m in model.modules():
        if isinstance(m, InstanceNorm):
            m.use_instance_stats_in_eval = mode == "instance"


def freeze_norms(model: nn.Module, frozen: bool = True) -> None:
    """Train (and evaluate) with the running statistics fixed: the network is then exactly what is exported.

    Used to fine-tune an instance-norm network in its export mode (per-instance statistics are not a local
    operator, so exported models fold the running ones; training in that mode removes the mismatch).
    """
    for m in model.modules():
        if isinstance(m, InstanceNorm):
            m.frozen = frozen


class ChannelAffine(nn.Module):
    """Per-channel ``x * scale + shift``: an eval-mode InstanceNorm3d with running statistics, folded."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone().reshape(1, -1, 1, 1, 1))
        self.register_buffer("shift", shift.detach().clone().reshape(1, -1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def fold_norms(model: nn.Module) -> nn.Module:
    """Copy of ``model`` for export: eval mode, every InstanceNorm3d (running statistics) as a ChannelAffine.

    The result computes exactly what ``model.eval()`` computes with running statistics, and exports to plain
    ONNX Mul/Add (the legacy exporter refuses InstanceNorm with running statistics and a dynamic batch).
    """
    import copy

    out = copy.deepcopy(model).eval()
    for module in list(out.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.InstanceNorm3d):
                if child.running_mean is None or child.running_var is None:
                    raise ValueError("fold_norms needs InstanceNorm3d with track_running_stats")
                inv = torch.rsqrt(child.running_var + child.eps)
                weight = child.weight if child.affine else torch.ones_like(inv)
                bias = child.bias if child.affine else torch.zeros_like(inv)
                scale = weight * inv
                setattr(module, name, ChannelAffine(scale, bias - child.running_mean * scale))
    return out


def stride(model: DetNet3D) -> tuple[int, int, int]:
    """Input sizes must be multiples of this (z, y, x)."""
    n = model.levels - 1
    entry = (1, 2, 2) if getattr(model, "stem", False) else (1, 1, 1)
    return tuple(s**n * e for s, e in zip(model.scale, entry))  # type: ignore[return-value]


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def gflops(model: DetNet3D, shape: tuple[int, int, int] = (10, 512, 512)) -> float:
    """Conv multiply-accumulates (GMAC, counted as 'GFLOPs' like most papers) for one input of ``shape`` (ZYX)."""
    s = stride(model)
    size = [max(1, -(-d // k)) * k for d, k in zip(shape, s)]  # padded to the stride
    macs = 0
    level_sizes = []
    cur = list(size)
    full = size[0] * size[1] * size[2]
    if getattr(model, "stem", False):
        cur = [cur[0], cur[1] // 2, cur[2] // 2]
        macs += cur[0] * cur[1] * cur[2] * model.entry[0].weight.numel() + full * model.full[0].weight.numel()
    for level in range(model.levels):
        if level > 0:
            cur = [c // k for c, k in zip(cur, model.scale)]
        level_sizes.append(cur)
    blocks = list(zip(model.encoders, range(model.levels)))
    blocks += list(zip(model.decoders, reversed(range(model.levels - 1))))
    for block, level in blocks:
        nvox = level_sizes[level][0] * level_sizes[level][1] * level_sizes[level][2]
        for layer in block.layers:
            conv = layer[0]
            macs += nvox * conv.weight.numel()
    macs += full * model.head.weight.numel()
    return macs / 1e9


@torch.no_grad()
def receptive_halo(model: DetNet3D, max_halo: tuple[int, int, int] = (256, 1024, 1024)) -> tuple[int, int, int]:
    """Receptive-field radius (z, y, x) in voxels: how far an input voxel can change the output.

    Measured, deterministically, on a probe with the same topology (width 1, conv weights 1, biases 0, eval
    mode, identity norms): one input voxel is set to 1 in a zero volume and every output voxel whose logit
    became non-zero is counted. All operations are then monotone with positive weights, so nothing cancels
    and the result is the exact structural bound that holds for any weights; the probe is repeated at every
    sub-stride phase, in a volume that grows until the response fits inside it (up to ``max_halo``).
    """
    probe = DetNet3D(width=1, levels=model.levels, z_pool=model.z_pool, stem=getattr(model, "stem", False)).eval()
    for m in probe.modules():
        if isinstance(m, nn.Conv3d):
            m.weight.fill_(1.0)
            m.bias.zero_()
    s = stride(model)
    box = [min(8 * k, m) for k, m in zip(s, max_halo)]
    while True:
        halo = _probe_halo(probe, s, box)
        grow = [h >= b and b < m for h, b, m in zip(halo, box, max_halo)]
        if not any(grow):
            return tuple(min(h, m) for h, m in zip(halo, max_halo))  # type: ignore[return-value]
        box = [min(2 * b, m) if g else b for b, g, m in zip(box, grow, max_halo)]


def _probe_halo(probe: DetNet3D, s: tuple[int, int, int], box: list[int]) -> list[int]:
    """Extent of the response along each axis; the structure is separable, so one line per axis suffices."""
    halo = [0, 0, 0]
    for a in range(3):
        shape = list(s)
        shape[a] = -(-(2 * box[a] + 2 * s[a]) // s[a]) * s[a]
        centre = (shape[a] // 2) // s[a] * s[a]
        for phase in range(s[a]):
            x = torch.zeros((1, 1, *shape))
            pos = [0, 0, 0]
            pos[a] = centre + phase
            x[(0, 0, *pos)] = 1.0
            idx = (probe.logits(x)[0, 0] != 0).nonzero()
            halo[a] = max(halo[a], int((idx[:, a] - pos[a]).abs().max()))
    return halo
