"""Tile budgets from free memory."""

from dmdet_infer import memory


def test_budget_is_a_quarter_of_free_ram_capped(monkeypatch):
    monkeypatch.setattr(memory, "available_ram", lambda: 4 << 30)
    per = memory.bytes_per_voxel(8)
    assert memory.tile_voxels(8) == (1 << 30) // per  # a quarter of 4 GiB
    monkeypatch.setattr(memory, "available_ram", lambda: 64 << 30)
    assert memory.tile_voxels(8) == memory.MAX_TILE_BYTES // per  # capped at 2 GiB
    assert memory.tile_voxels(8, max_bytes=8 << 30) == (8 << 30) // per  # the cap can be raised
    monkeypatch.setattr(memory, "available_ram", lambda: 1 << 20)
    assert memory.tile_voxels(8) == memory.MIN_TILE_VOXELS  # never absurdly small
    monkeypatch.setattr(memory, "available_ram", lambda: None)
    assert memory.tile_voxels(8) == memory.MAX_TILE_BYTES // per


def test_wider_networks_get_fewer_voxels_and_cuda_asks_the_gpu(monkeypatch):
    monkeypatch.setattr(memory, "available_ram", lambda: 4 << 30)
    assert memory.tile_voxels(16) < memory.tile_voxels(8)
    assert memory.tile_voxels(None) == memory.tile_voxels(16)
    monkeypatch.setattr(memory, "free_gpu_memory", lambda: 2 << 30)
    assert memory.tile_voxels(8, on_cuda=True) == (512 << 20) // memory.bytes_per_voxel(8)


def test_available_ram_reads_this_machine():
    free = memory.available_ram()
    assert free is None or free > 0


def test_a_config_width_that_is_no_width_counts_as_unknown():
    """Found by tests/test_fuzz.py: a model whose config said width "x" failed with an internal ValueError."""
    from dmdet_infer.memory import bytes_per_voxel

    for width in ("x", None, 0, -3, 1e9, True, float("nan"), [8]):
        assert bytes_per_voxel(width) == bytes_per_voxel(16), width
    assert bytes_per_voxel(8) < bytes_per_voxel(16) < bytes_per_voxel(32.0)
