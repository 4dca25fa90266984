"""DetNet3D: shapes, parameter count, norm modes, receptive halo (locality in eval mode), FLOPs."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.network import (  # noqa: E402
    DetNet3D,
    count_params,
    fold_norms,
    gflops,
    receptive_halo,
    set_norm_mode,
    stride,
)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def _randomised(width: int = 4, **kw) -> DetNet3D:
    """A net with random, non-trivial weights and running statistics (as if trained)."""
    torch.manual_seed(0)
    net = DetNet3D(width=width, **kw)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(2, 1, 6, 16, 16))
    return net.eval()


def test_output_shape_and_range():
    net = _randomised()
    for shape in [(1, 1, 10, 32, 32), (2, 1, 3, 8, 12)]:
        out = net(torch.randn(shape) * 5)
        assert out.shape == shape
        assert float(out.detach().min()) >= 0.0 and float(out.detach().max()) <= 1.0
    net.train()
    assert net(torch.randn(2, 1, 4, 16, 16)).shape == (2, 1, 4, 16, 16)


def test_stride_and_params_match_method_notes():
    net = DetNet3D(width=16)
    assert stride(net) == (1, 4, 4)
    assert stride(DetNet3D(width=16, z_pool=True)) == (4, 4, 4)
    # method.md §2: 498.6k conv weights+biases + 960 affine-norm params = 499.6k (+1 for the 1x1 head bias shift)
    assert abs(count_params(net) - 499_600) < 500
    # running statistics: mean+var per channel (2*480) + one counter per norm (15 norms)
    assert sum(b.numel() for b in net.buffers()) == 2 * 480 + 15


def test_gflops_counts_conv_macs():
    net = DetNet3D(width=16)
    # hand count: level sizes full, 1/4, 1/16 in voxels; MACs = voxels * weights per conv
    w = [c.weight.numel() for c in net.modules() if isinstance(c, torch.nn.Conv3d)]
    full = 10 * 512 * 512
    per_level = [full, full / 4, full / 16, full / 4, full]
    expected = sum(per_level[i] * sum(w[3 * i : 3 * i + 3]) for i in range(5)) + full * w[15]
    assert gflops(net) == pytest.approx(expected / 1e9)
    assert gflops(net, (10, 510, 509)) == pytest.approx(expected / 1e9)  # padded to the stride


def test_norm_modes_differ_only_in_eval():
    net = _randomised()
    x = torch.randn(1, 1, 6, 16, 16) * 3 + 1
    running = net(x)
    set_norm_mode(net, "instance")
    instance = net(x)
    assert not torch.allclose(running, instance)
    set_norm_mode(net, "running")
    assert torch.equal(net(x), running)
    with pytest.raises(ValueError):
        set_norm_mode(net, "batch")


def test_fold_norms_is_exact():
    net = _randomised()
    x = torch.randn(2, 1, 5, 12, 16)
    assert torch.allclose(fold_norms(net)(x), net(x), atol=1e-6)
    assert not any(isinstance(m, torch.nn.InstanceNorm3d) for m in fold_norms(net).modules())


def test_receptive_halo_is_exact_for_a_random_net():
    net = _randomised(width=2)
    hz, hy, hx = receptive_halo(net)
    assert (hz, hy, hx) == (15, 36, 36)
    assert receptive_halo(DetNet3D(width=2, levels=2)) == (9, 14, 14)
    shape = (1, 1, 2 * hz + 2, 2 * hy + 8, 2 * hx + 8)
    torch.manual_seed(1)
    x = torch.randn(shape, dtype=torch.float64)
    net = net.double()
    base = net(x)
    p = (hz, hy + 3, hx + 2)  # one probe voxel, not on the stride grid
    xp = x.clone()
    xp[(0, 0, *p)] += 5.0
    changed = ((net(xp) - base).abs()[0, 0] > 0).nonzero()
    dist = (changed - torch.tensor(p)).abs().max(dim=0).values.tolist()
    # the output never changes beyond the halo, and a random net uses (nearly) all of it
    assert dist[0] <= hz and dist[1] <= hy and dist[2] <= hx
    assert dist[0] >= hz - 1 and dist[1] >= hy - 4 and dist[2] >= hx - 4


def test_instance_mode_is_not_local():
    """Per-instance statistics make the output depend on the whole volume (why inference uses running ones)."""
    net = _randomised(width=2)
    set_norm_mode(net, "instance")
    x = torch.randn(1, 1, 4, 96, 96)
    xp = x.clone()
    xp[0, 0, :, -8:, -8:] += 10.0
    assert (net(xp) - net(x))[0, 0, :, :8, :8].abs().max() > 0


def test_stem_variant_is_a_third_of_the_work_with_a_true_halo():
    """``stem=True``: the hourglass at half xy resolution (issue 15's cheaper network)."""
    net = _randomised(width=2, stem=True)
    assert stride(net) == (1, 8, 8)
    for shape in [(1, 1, 10, 32, 32), (1, 1, 3, 8, 24)]:
        assert net(torch.randn(shape)).shape == shape
    assert fold_norms(net)(torch.ones(1, 1, 4, 16, 16)).shape == (1, 1, 4, 16, 16)
    w8, stem8 = DetNet3D(width=8), DetNet3D(width=8, stem=True)
    assert gflops(stem8) < 0.4 * gflops(w8)
    convs = [c for c in stem8.modules() if isinstance(c, torch.nn.Conv3d)]
    full, half = 10 * 512 * 512, 10 * 256 * 256
    per_conv = [half] + [half] * 3 + [half / 4] * 3 + [half / 16] * 3 + [half / 4] * 3 + [half] * 3 + [full, full]
    order = [stem8.entry[0]] + [c for c in convs if c is not stem8.entry[0] and c is not stem8.full[0]
                                 and c is not stem8.head] + [stem8.full[0], stem8.head]
    assert len(order) == len(per_conv)
    assert gflops(stem8) == pytest.approx(sum(n * c.weight.numel() for n, c in zip(per_conv, order)) / 1e9)
    hz, hy, hx = receptive_halo(net)
    x = torch.randn((1, 1, 2 * hz + 2, 2 * hy + 16, 2 * hx + 16), dtype=torch.float64)
    net = net.double()
    p = (hz, hy + 3, hx + 5)
    xp = x.clone()
    xp[(0, 0, *p)] += 5.0
    changed = ((net(xp) - net(x)).abs()[0, 0] > 0).nonzero()
    dist = (changed - torch.tensor(p)).abs().max(dim=0).values.tolist()
    assert dist[0] <= hz and dist[1] <= hy and dist[2] <= hx
    assert dist[1] >= hy - 8 and dist[2] >= hx - 8
