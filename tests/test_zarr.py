"""Zarr / OME-Zarr input: axes, pyramid level and voxel size from OME-NGFF metadata, lazy chunked reads."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from onnx_models import render_spots

zarr = pytest.importorskip("zarr")

from dmdet_infer import Detector  # noqa: E402
from dmdet_infer.errors import InputError  # noqa: E402
from dmdet_infer.io import normalise_axes  # noqa: E402
from dmdet_infer.zarr_io import LazyArray, is_zarr, read_zarr  # noqa: E402

TRUTH = np.array([[2.0, 10.2, 12.7], [4.4, 30.0, 20.3], [1.0, 25.6, 40.1]])


def write_ome(path, data, axes="tczyx", scale=(1.0, 1.0, 0.5, 0.2, 0.2), levels=2, version="0.4",
              unit="micrometer"):
    """A small OME-Zarr image: level k is data downsampled by 2**k in y and x."""
    fmt = 2 if version == "0.4" else 3
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    datasets = []
    for k in range(levels):
        sl = tuple(slice(None, None, 2**k) if a in "yx" else slice(None) for a in axes)
        level = np.ascontiguousarray(data[sl])
        arr = group.create_array(str(k), shape=level.shape, dtype=level.dtype,
                                 chunks=tuple(min(n, 16) for n in level.shape))
        arr[...] = level
        s = [v * (2**k if a in "yx" else 1) for v, a in zip(scale, axes)]
        datasets.append({"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": s}]})
    kinds = {"t": "time", "c": "channel"}
    ome_axes = [{"name": a, "type": kinds.get(a, "space"), **({"unit": unit} if a in "zyx" else {})}
                for a in axes]
    ms = [{"version": version, "axes": ome_axes, "datasets": datasets}]
    if version == "0.4":
        group.attrs["multiscales"] = ms
    else:
        group.attrs["ome"] = {"version": version, "multiscales": ms}
    return path


def movie(frames=2, channels=2, shape=(6, 48, 56)):
    out = np.zeros((frames, channels, *shape), np.uint16)
    for t in range(frames):
        for c in range(channels):
            out[t, c] = render_spots(shape, TRUTH + [0, 3 * c, t], seed=10 * t + c).astype(np.uint16)
    return out


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_axes_level_and_voxel_size(tmp_path, version):
    data = movie()
    path = write_ome(tmp_path / "img.zarr", data, version=version)
    assert is_zarr(path)
    stack = read_zarr(path, channel=1)
    assert isinstance(stack.data, LazyArray)
    assert stack.has_time and stack.axes == "TCZYX" and stack.data.shape == (2, 6, 48, 56)
    assert stack.voxel_size_um == pytest.approx((0.5, 0.2, 0.2))
    np.testing.assert_array_equal(np.asarray(stack.data), data[:, 1])
    low = read_zarr(path, channel=0, level=1)
    assert low.data.shape == (2, 6, 24, 28)
    assert low.voxel_size_um == pytest.approx((0.5, 0.4, 0.4))
    np.testing.assert_array_equal(low.data[1][2:4, 3:9, :], data[1, 0, 2:4, 6:18:2, ::2])


def test_nanometre_units_and_no_time(tmp_path):
    data = movie(frames=1, channels=1)[0, 0]
    path = write_ome(tmp_path / "v.zarr", data, axes="zyx", scale=(300.0, 100.0, 100.0), levels=1, unit="nanometer")
    stack = read_zarr(path)
    assert not stack.has_time and stack.data.shape == (1, 6, 48, 56)
    assert stack.voxel_size_um == pytest.approx((0.3, 0.1, 0.1))


def test_plain_array_and_axes_override_transpose_lazily(tmp_path):
    data = movie(frames=3, channels=1)[:, 0]  # TZYX
    zyx_t = np.ascontiguousarray(np.moveaxis(data, 0, 1))  # stored as ZTYX
    arr = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=zyx_t.shape, dtype=zyx_t.dtype,
                          chunks=(2, 1, 16, 16))
    arr[...] = zyx_t
    stack = read_zarr(tmp_path / "a.zarr", axes="ZTYX")
    expect, has_time = normalise_axes(zyx_t, "ZTYX")
    assert stack.has_time == has_time and stack.data.shape == expect.shape
    frame = stack.data[2]
    assert isinstance(frame, LazyArray) and frame.shape == (6, 48, 56)
    np.testing.assert_array_equal(frame[1:5, 7:30:3, 40:], expect[2, 1:5, 7:30:3, 40:])
    np.testing.assert_array_equal(frame[3][5], expect[2, 3, 5])
    zarr.open_array(str(tmp_path / "six.zarr"), mode="w", shape=(1, 2, 1, 2, 4, 4), dtype="uint16")
    with pytest.raises(InputError, match="cannot tell the axes.*axes="):
        read_zarr(tmp_path / "six.zarr")


def test_reads_only_the_chunks_a_tile_needs(tmp_path):
    class Spy:
        def __init__(self, a):
            self.a, self.shape, self.dtype, self.keys = a, a.shape, a.dtype, []

        def __getitem__(self, key):
            self.keys.append(key)
            return self.a[key]

    spy = Spy(np.arange(2 * 4 * 8 * 10).reshape(2, 4, 8, 10))
    view = LazyArray(spy, {}, [0, 1, 2, 3])[1]
    assert spy.keys == [] and view.shape == (4, 8, 10)
    np.testing.assert_array_equal(view[1:3, 2:4, 5:9], spy.a[1, 1:3, 2:4, 5:9])
    assert spy.keys == [(1, slice(1, 3), slice(2, 4), slice(5, 9))]


def test_detection_on_ome_zarr_equals_numpy(tmp_path, pooled_model_path):
    data = movie()
    stack = read_zarr(write_ome(tmp_path / "img.zarr", data), channel=0)
    det = Detector(pooled_model_path, device="cpu", tile=(3, 16, 16))
    spots = det.detect_stack(stack)
    expect = [det.detect(data[t, 0]).with_frame(t) for t in range(2)]
    assert len(spots) == sum(len(e) for e in expect) >= 6
    np.testing.assert_allclose(spots.zyx, np.concatenate([e.zyx for e in expect]), atol=1e-9)
    assert "x_um" in spots.columns()


@pytest.mark.parametrize("kwargs,message", [
    ({"level": 5}, "level=5 is out of range"),
    ({}, "has 2 channels"),
    ({"channel": 3}, "channel=3 is out of range"),
])
def test_bad_requests_are_one_line_errors(tmp_path, kwargs, message):
    path = write_ome(tmp_path / "img.zarr", movie())
    with pytest.raises(InputError, match=message) as info:
        read_zarr(path, **kwargs)
    assert "\n" not in str(info.value) and "img.zarr" in str(info.value)


def test_not_a_zarr_store(tmp_path):
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(InputError, match="x.zarr"):
        read_zarr(tmp_path / "x.zarr")
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw", shape=(2, 4, 4), dtype="uint16")
    with pytest.raises(InputError, match="without OME multiscales.*raw"):
        read_zarr(tmp_path / "g.zarr")


def _chunk_files(store):
    return sorted(p for p in store.rglob("*") if p.is_file() and p.name not in (".zarray", ".zattrs", ".zgroup",
                                                                                  "zarr.json"))


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize("damage", ["garbage", "cut"])
def test_a_corrupt_chunk_is_one_line_exit_2(tmp_path, pooled_model_path, fmt, damage):
    """Issue 16 item 11: a damaged chunk gave exit 1 "internal error RuntimeError: Zstd decompression error" and
    asyncio's "Task was destroyed but it is pending!" lines; the next input must still run."""
    data = movie(frames=1, channels=1)[0, 0]
    store = tmp_path / "bad.zarr"
    arr = zarr.open_array(str(store), mode="w", shape=data.shape, dtype=data.dtype, chunks=(3, 16, 16),
                          zarr_format=fmt)
    arr[...] = data
    chunk = _chunk_files(store)[len(_chunk_files(store)) // 2]
    raw = chunk.read_bytes()
    chunk.write_bytes(b"garbage!" * 8 if damage == "garbage" else raw[: len(raw) // 2])
    good = write_ome(tmp_path / "good.zarr", movie(frames=1, channels=1), levels=1)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "dmdet_infer.cli", str(store), str(good), "-o", str(out),
                           "--model", str(pooled_model_path), "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.zarr: " in lines[0], proc.stderr
    assert "internal error" not in lines[0] and "corrupt" in lines[0], lines[0]
    assert sorted(p.name for p in out.iterdir()) == ["good.csv"]


BROKEN_OME = {
    "datasets not a list": {"axes": ["z", "y", "x"], "datasets": "0"},
    "dataset without path": {"axes": ["z", "y", "x"], "datasets": [{}]},
    "path null": {"axes": ["z", "y", "x"], "datasets": [{"path": None}]},
    "path to the group": {"axes": ["z", "y", "x"], "datasets": [{"path": "."}]},
    "axis without name": {"axes": [{"type": "space"}, {"name": "y"}, {"name": "x"}], "datasets": [{"path": "0"}]},
}


@pytest.mark.parametrize("case", [*BROKEN_OME, "multiscales a dict", "multiscales of text"])
def test_broken_ome_zarr_metadata_is_one_line_exit_2(tmp_path, pooled_model_path, case):
    """Issue 16 item 11: malformed multiscales gave exit 1 "internal error KeyError/TypeError/ValueError"."""
    from click.testing import CliRunner

    from dmdet_infer.cli import main

    data = movie(frames=1, channels=1)[0, 0]
    group = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=(3, 16, 16))[...] = data
    multiscales = {"multiscales a dict": {"a": 1}, "multiscales of text": ["x"]}.get(case)
    group.attrs["multiscales"] = multiscales if multiscales is not None else [BROKEN_OME[case]]
    result = CliRunner().invoke(main, [str(tmp_path / "img.zarr"), "-o", str(tmp_path / "s.csv"), "--model",
                                       str(pooled_model_path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "img.zarr: " in lines[0] and "internal error" not in lines[0], result.stderr
    assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("scale", [(-1.0, 0.0, 1.0), ("a", 1, 1), None])
def test_a_malformed_ome_scale_drops_the_voxel_size_like_tiff_metadata(tmp_path, scale):
    """A negative scale was refused without naming the store; text gave exit 1 "internal error ValueError"."""
    data = movie(frames=1, channels=1)[0, 0]
    path = write_ome(tmp_path / "v.zarr", data, axes="zyx", levels=1)
    group = zarr.open_group(str(path), mode="r+")
    multiscales = group.attrs["multiscales"]
    multiscales[0]["datasets"][0]["coordinateTransformations"] = [{"type": "scale", "scale": scale}]
    group.attrs["multiscales"] = multiscales
    stack = read_zarr(path)
    assert stack.voxel_size_um is None and stack.data.shape == (1, *data.shape)
