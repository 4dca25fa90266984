"""Tests for dmdet_infer.io: reading stacks into TZYX, errors, atomic CSV writing, input expansion."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from dmdet_infer.errors import InputError
from dmdet_infer.io import (
    Stack,
    atomic_write,
    check_finite,
    input_paths,
    read_stack,
    write_spots_csv,
)
from dmdet_infer.lazy import FileArray, LazyArray

RNG = np.random.default_rng(0)


def _arr(shape, dtype=np.uint16):
    data = RNG.integers(0, 200, size=shape)
    return data.astype(dtype)


def _write(path: Path, data: np.ndarray, **kwargs) -> Path:
    kwargs.setdefault("photometric", "minisblack")
    tifffile.imwrite(path, data, **kwargs)
    return path


def _raises(path_or_name, *words, **kwargs):
    """Assert read_stack raises a one-line InputError naming the file and containing ``words``."""
    with pytest.raises(InputError) as info:
        read_stack(path_or_name, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    assert Path(path_or_name).name in msg
    for word in words:
        assert word in msg, (word, msg)
    return msg


# ----------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_zyx_roundtrip_is_lazy(tmp_path, dtype):
    data = _arr((5, 6, 7), dtype)
    path = _write(tmp_path / "zyx.tif", data)
    stack = read_stack(path)
    assert stack.data.shape == (1, 5, 6, 7)
    assert stack.data.dtype == dtype
    assert isinstance(stack.data, LazyArray)  # read on slicing, with file reads (never a memory map: SIGBUS)
    np.testing.assert_array_equal(stack.data[0], data)
    assert stack.has_time is False
    assert stack.path == path
    assert stack.voxel_size_um is None


def test_plain_multipage_tiff_is_zyx(tmp_path):
    data = _arr((4, 6, 7))
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for plane in data:
            tif.write(plane, photometric="minisblack", metadata=None)
    stack = read_stack(path)
    assert stack.data.shape == (1, 4, 6, 7)
    np.testing.assert_array_equal(stack.data[0], data)


def test_imagej_tzyx_hyperstack(tmp_path):
    data = _arr((2, 5, 6, 7))
    path = _write(tmp_path / "tzyx.tif", data, imagej=True, metadata={"axes": "TZYX"})
    stack = read_stack(path)
    assert stack.axes == "TZYX"
    assert stack.has_time is True
    assert isinstance(stack.data, LazyArray)
    np.testing.assert_array_equal(stack.data, data)


def test_imagej_tzcyx_channel_and_voxel_size(tmp_path):
    data = _arr((2, 5, 3, 6, 7))
    path = _write(tmp_path / "hyper.tif", data, imagej=True, resolution=(1 / 0.1, 1 / 0.1),
                  metadata={"spacing": 0.3, "unit": "um", "axes": "TZCYX"})
    stack = read_stack(path, channel=2)
    assert stack.axes == "TZCYX"
    assert stack.data.shape == (2, 5, 6, 7)
    np.testing.assert_array_equal(stack.data, data[:, :, 2])
    assert isinstance(stack.data, LazyArray)
    assert stack.voxel_size_um == pytest.approx((0.3, 0.1, 0.1))
    assert stack.has_time is True


def test_imagej_micron_unit_and_default_spacing(tmp_path):
    path = _write(tmp_path / "ij.tif", _arr((4, 6, 7)), imagej=True, resolution=(1 / 0.2, 1 / 0.25),
                  metadata={"unit": "micron", "axes": "ZYX"})
    # ImageJ leaves spacing out when it is 1 unit
    assert read_stack(path).voxel_size_um == pytest.approx((1.0, 0.25, 0.2))


def test_imagej_without_unit_has_no_voxel_size(tmp_path):
    path = _write(tmp_path / "ij.tif", _arr((4, 6, 7)), imagej=True, resolution=(5.0, 5.0),
                  metadata={"axes": "ZYX"})
    assert read_stack(path).voxel_size_um is None


def test_ome_tiff_axes_and_physical_size_in_nm(tmp_path):
    data = _arr((2, 4, 2, 6, 7))
    path = _write(tmp_path / "s.ome.tif", data, ome=True, metadata={
        "axes": "TZCYX", "PhysicalSizeX": 100.0, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 100.0,
        "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 0.5, "PhysicalSizeZUnit": "µm"})
    stack = read_stack(path, channel=1)
    assert stack.axes == "TZCYX"
    np.testing.assert_array_equal(stack.data, data[:, :, 1])
    assert stack.voxel_size_um == pytest.approx((0.5, 0.1, 0.1))


def test_ome_tiff_zyx_default_unit(tmp_path):
    data = _arr((4, 6, 7), np.float32)
    path = _write(tmp_path / "z.ome.tif", data, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 1.0})
    stack = read_stack(path)
    assert stack.data.shape == (1, 4, 6, 7)
    assert stack.has_time is False
    assert stack.voxel_size_um == pytest.approx((1.0, 0.2, 0.2))


def test_compressed_file_is_read_into_memory(tmp_path):
    data = _arr((4, 6, 7))
    path = _write(tmp_path / "zlib.tif", data, compression="zlib")
    stack = read_stack(path)
    assert isinstance(stack.data, np.ndarray)
    np.testing.assert_array_equal(stack.data[0], data)


def test_axes_override(tmp_path):
    data = _arr((6, 4, 5))
    # tifffile labels a 3D ImageJ stack without axes as channels (CYX)
    path = _write(tmp_path / "c.tif", data, imagej=True)
    _raises(path, "6 channels", "channel=K", "axes=")
    stack = read_stack(path, axes="zyx")
    assert stack.axes == "ZYX"
    np.testing.assert_array_equal(stack.data[0], data)
    # ZTYX relabelled: the first axis is time
    path4 = _write(tmp_path / "t.tif", _arr((2, 3, 4, 5)), metadata={"axes": "ZTYX"})
    np.testing.assert_array_equal(read_stack(path4, axes="TZYX").data, tifffile.imread(path4))
    np.testing.assert_array_equal(read_stack(path4).data, tifffile.imread(path4).transpose(1, 0, 2, 3))


def test_size_one_unknown_axis_is_squeezed_and_generic_axis_is_z(tmp_path):
    data = _arr((1, 4, 6, 7))
    path = _write(tmp_path / "e.tif", data, metadata={"axes": "EZYX"})
    assert read_stack(path).data.shape == (1, 4, 6, 7)
    path2 = _write(tmp_path / "q.tif", _arr((2, 4, 6, 7)), metadata={"axes": "TQYX"})
    stack = read_stack(path2)
    assert stack.data.shape == (2, 4, 6, 7) and stack.has_time


def test_rgb_needs_channel(tmp_path):
    data = _arr((4, 6, 7, 3), np.uint8)
    path = _write(tmp_path / "rgb.tif", data, photometric="rgb", metadata={"axes": "ZYXS"})
    _raises(path, "3 samples", "channel=K")
    np.testing.assert_array_equal(read_stack(path, channel=1).data[0], data[..., 1])


# ------------------------------------------------------------------------------------------------ errors


def test_missing_file(tmp_path):
    _raises(tmp_path / "nope.tif", "not found")


def test_folder_is_not_a_stack(tmp_path):
    (tmp_path / "dir.tif").mkdir()
    _raises(tmp_path / "dir.tif", "folder")


def test_not_a_tiff(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("hello, this is not an image")
    _raises(path, "not a readable TIFF")


def test_corrupt_tiff(tmp_path):
    path = _write(tmp_path / "cut.tif", _arr((4, 16, 16)))
    raw = path.read_bytes()
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(raw[:8] + b"\xff" * 8 + raw[16:40])
    _raises(bad, "TIFF")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(raw[: len(raw) // 3])
    _raises(truncated, "truncated")


def test_2d_image(tmp_path):
    path = _write(tmp_path / "flat.tif", _arr((6, 7)))
    _raises(path, "2D image", "3D detector")


def test_time_series_of_2d_images(tmp_path):
    path = _write(tmp_path / "movie.tif", _arr((3, 6, 7)), metadata={"axes": "TYX"})
    _raises(path, "2D image", "axes=")


def test_channel_required_and_range(tmp_path):
    path = _write(tmp_path / "c.tif", _arr((2, 4, 3, 6, 7)), imagej=True, metadata={"axes": "TZCYX"})
    _raises(path, "3 channels", "channel=K", "0..2")
    _raises(path, "channel=3 is out of range", "0..2", channel=3)
    _raises(path, "channel=-1 is negative", channel=-1)
    single = _write(tmp_path / "one.tif", _arr((4, 6, 7)))
    assert read_stack(single, channel=0).data.shape == (1, 4, 6, 7)
    _raises(single, "out of range", "1 channel", "use channel=0", channel=1)


def test_unresolvable_axes(tmp_path):
    path = _write(tmp_path / "five.tif", _arr((2, 2, 4, 6, 7)))
    msg = _raises(path, "cannot interpret", "axes=")
    assert "TZCYX" in msg
    lam = _write(tmp_path / "lambda.tif", _arr((2, 3, 4, 6, 7)), metadata={"axes": "TEZYX"})
    _raises(lam, "axis E", "axes=")
    # with axes= the same file is fine once a channel is chosen
    assert read_stack(lam, axes="TCZYX", channel=1).data.shape == (2, 4, 6, 7)


def test_axes_override_length_mismatch(tmp_path):
    path = _write(tmp_path / "zyx.tif", _arr((4, 6, 7)))
    _raises(path, "axes='TZYX'", "3 dimensions", axes="TZYX")
    _raises(path, "distinct letters", axes="ZZX")


def test_unsupported_dtypes(tmp_path):
    for dtype in (np.complex64, np.bool_, np.int8):
        path = _write(tmp_path / f"{np.dtype(dtype).name}.tif", np.zeros((4, 6, 7), dtype))
        _raises(path, "unsupported pixel type", np.dtype(dtype).name)


def test_empty_array_is_refused():
    with pytest.raises(InputError, match="empty"):
        Stack.from_array(np.zeros((0, 6, 7), np.float32))


# ------------------------------------------------------------------------------------------ from_array


def test_from_array():
    vol = np.zeros((4, 6, 7), np.float32)
    stack = Stack.from_array(vol, voxel_size_um=(0.5, 0.1, 0.1))
    assert stack.data.shape == (1, 4, 6, 7) and not stack.has_time
    assert stack.voxel_size_um == (0.5, 0.1, 0.1)
    assert np.shares_memory(stack.data, vol)
    series = Stack.from_array(np.zeros((2, 4, 6, 7), np.uint16))
    assert series.data.shape == (2, 4, 6, 7) and series.has_time and series.axes == "TZYX"
    five = np.zeros((2, 4, 3, 6, 7), np.uint16)
    five[:, :, 1] = 5
    picked = Stack.from_array(five, axes="TZCYX", channel=1)
    assert picked.data.shape == (2, 4, 6, 7) and (picked.data == 5).all()
    with pytest.raises(InputError, match="axes="):
        Stack.from_array(five)
    with pytest.raises(InputError, match="2D"):
        Stack.from_array(np.zeros((6, 7)))
    with pytest.raises(InputError, match="voxel_size_um"):
        Stack.from_array(vol, voxel_size_um=(0.5, 0.1))
    with pytest.raises(InputError, match="unsupported"):
        Stack.from_array(vol.astype(np.complex64))


# ---------------------------------------------------------------------------------------- check_finite


def test_check_finite_chunked_reports_count_and_first_index(tmp_path):
    data = np.zeros((2, 3, 4, 5), np.float32)
    data[1, 2, 3, 1] = np.nan
    data[0, 1, 2, 3] = np.inf
    data[1, 0, 0, 0] = -np.inf
    path = _write(tmp_path / "nan.tif", data, metadata={"axes": "TZYX"})
    stack = read_stack(path)  # reading stays lazy: no error here
    for max_elems in (1, 7, 20, 1000):
        with pytest.raises(InputError) as info:
            check_finite(stack.data, path, max_elems=max_elems)
        msg = str(info.value)
        assert "nan.tif" in msg and "3 non-finite" in msg and "(0, 1, 2, 3)" in msg, msg
    check_finite(np.zeros((3, 4, 5), np.float32), path)
    check_finite(np.zeros((3, 4, 5), np.uint16), path)


def test_check_finite_refuses_values_float32_cannot_compute_with():
    data = np.zeros((3, 4, 5))
    check_finite(data + 1e29)
    data[1, 2, 3] = -2e300
    with pytest.raises(InputError, match=r"1 voxel\(s\) hold float64 values beyond float32 range.*2e\+300"):
        check_finite(data, "x.tif")
    with pytest.raises(InputError, match=r"60 voxel\(s\) hold values beyond ±1e\+30"):
        check_finite(np.full((3, 4, 5), 3e38, np.float32), max_elems=7)


# ----------------------------------------------------------------------------------------------- CSV


def test_write_spots_csv_roundtrip(tmp_path):
    cols = {
        "frame": np.array([0, 0, 1], np.int64),
        "z": np.array([1.0, 2.123456, 3.5]),
        "y": np.array([10.0, 20.5, 30.25], np.float32),
        "x": np.array([0.0, 1.0, 2.0]),
        "score": np.array([0.912345678, 0.5, 1e-7], np.float32),
        "intensity": np.array([100, 65535, 7], np.uint16),
        "z_um": np.array([0.3, 0.6, 0.9]),
        "y_um": np.array([1.0, 2.0, 3.0]),
        "x_um": np.array([0.0, 0.1, 0.2]),
    }
    path = tmp_path / "spots.csv"
    write_spots_csv(path, cols)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(cols)
    assert len(rows) == 4
    assert rows[1][0] == "0" and rows[3][0] == "1"
    assert rows[2][1] == "2.1235"
    assert rows[1][4] == "0.912346"
    assert rows[2][5] == "65535"
    loaded = np.genfromtxt(path, delimiter=",", names=True)
    for name, values in cols.items():
        np.testing.assert_allclose(loaded[name], values, rtol=1e-5, atol=5e-5)
    assert not [p for p in tmp_path.iterdir() if p.name != "spots.csv"]


def test_write_spots_csv_float_frame_is_int_and_empty_is_header_only(tmp_path):
    path = tmp_path / "s.csv"
    write_spots_csv(path, {"frame": np.array([2.0]), "z": np.array([1.0])})
    assert path.read_text().splitlines() == ["frame,z", "2,1.0000"]
    write_spots_csv(path, {"z": np.zeros(0), "y": np.zeros(0), "x": np.zeros(0)})
    assert path.read_text() == "z,y,x\n"


def test_write_spots_csv_bad_columns_leave_nothing(tmp_path):
    path = tmp_path / "s.csv"
    with pytest.raises(ValueError):
        write_spots_csv(path, {"z": np.zeros(2), "y": np.zeros(3)})
    assert list(tmp_path.iterdir()) == []


def test_write_spots_csv_missing_folder(tmp_path):
    path = tmp_path / "nope" / "spots.csv"
    with pytest.raises(InputError, match="does not exist") as info:
        write_spots_csv(path, {"z": np.zeros(1)})
    assert "spots.csv" in str(info.value)


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic_write(path, "w") as f:
            f.write("new partial")
            raise Boom
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]

    fresh = tmp_path / "fresh.png"
    with pytest.raises(Boom):
        with atomic_write(fresh) as f:
            f.write(b"\x89PNG")
            raise Boom
    assert not fresh.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_atomic_write_binary_and_permissions(tmp_path):
    path = tmp_path / "m.json"
    with atomic_write(path) as f:
        f.write(b"{}")
    assert path.read_bytes() == b"{}"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_failure_inside_csv_writer(tmp_path, monkeypatch):
    path = tmp_path / "spots.csv"

    def bad_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", bad_fsync)
    with pytest.raises(InputError, match="No space left"):
        write_spots_csv(path, {"z": np.arange(3.0)})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ input_paths


def test_input_paths(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    for name in ("b.tif", "a.TIFF", "c.tiff", "notes.txt"):
        (folder / name).write_bytes(b"")
    other = tmp_path / "x.tif"
    other.write_bytes(b"")
    got = input_paths([str(other), str(folder), str(folder / "*.tif"), str(other)])
    assert [p.name for p in got] == ["x.tif", "a.TIFF", "b.tif", "c.tiff"]
    with pytest.raises(InputError, match="no files match"):
        input_paths([str(tmp_path / "*.nd2")])
    with pytest.raises(InputError, match="not found") as info:
        input_paths([str(tmp_path / "missing.tif")])
    assert "missing.tif" in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no .tif"):
        input_paths([str(empty)])
    with pytest.raises(InputError):
        input_paths([])


def test_atomic_write_accepts_names_up_to_the_file_system_limit(tmp_path):
    """Issue 16 item 11: outputs named with 244-255 characters failed because the temporary name was longer."""
    from dmdet_infer.io import atomic_write

    path = tmp_path / ("s" * 251 + ".csv")
    with atomic_write(path, "w") as f:
        f.write("z,y,x\n")
    assert path.read_text() == "z,y,x\n"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def _old(path: Path) -> Path:
    """Date the file back, so that a rewrite within the same clock tick still changes its modification time."""
    os.utime(path, (1e9, 1e9))
    return path


@pytest.mark.parametrize("change", ["truncate", "rewrite"])
def test_a_file_changed_after_it_was_opened_is_refused_not_misread(tmp_path, change):
    """Issue 16 item 7: a memory-mapped input died with SIGBUS when the file shrank; a rewrite was read mixed."""
    data = _arr((6, 32, 32))
    path = _old(_write(tmp_path / "live.tif", data))
    stack = read_stack(path)
    np.testing.assert_array_equal(stack.data[0, 1:3], data[1:3])
    if change == "truncate":
        os.truncate(path, 1000)
    else:
        with open(path, "r+b") as handle:  # same size, other voxels
            handle.seek(-64, os.SEEK_END)
            handle.write(b"\x07" * 64)
    for read in (lambda: np.asarray(stack.data), lambda: stack.data[0][2:4, 5:9, :]):
        with pytest.raises(InputError, match="truncated or rewritten") as info:
            read()
        assert "live.tif" in str(info.value) and "\n" not in str(info.value)


def test_a_file_truncated_before_its_image_data_ends_is_incomplete(tmp_path):
    data = _arr((6, 32, 32))
    path = _write(tmp_path / "short.tif", data, imagej=True, metadata={"axes": "ZYX"})
    with tifffile.TiffFile(path) as tif:
        end = tif.series[0].dataoffset + tif.series[0].nbytes
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])  # only the trailing page headers, which an ImageJ stack does not need
    np.testing.assert_array_equal(read_stack(path).data[0], data)
    path.write_bytes(raw[:end - 100])
    assert "truncated" in _raises(path, "incomplete file").split("short.tif: ", 1)[1]
    with open(path, "rb") as handle, pytest.raises(InputError, match="ends at byte"):
        FileArray(handle, path, 336, (6, 32, 32), np.dtype("uint16"))


def test_lazy_reads_equal_numpy_indexing(tmp_path):
    data = RNG.integers(0, 60000, size=(3, 4, 2, 9, 11)).astype(">u2")  # big-endian file, strided reads
    path = tmp_path / "be.tif"
    tifffile.imwrite(path, data, byteorder=">", photometric="minisblack", metadata={"axes": "TZCYX"})
    stack = read_stack(path, channel=1, axes="TZCYX")
    expect = data[:, :, 1].astype(np.uint16)
    assert stack.data.dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(stack.data), expect)
    for key in [(2, slice(1, 4), slice(None, None, 3), slice(2, 9)), (0, slice(None), slice(8, 1, -2), 4),
                (1, 3, slice(None), slice(None, None, -1)), (slice(0, 3, 2), 0, slice(5, 5), slice(None))]:
        np.testing.assert_array_equal(stack.data[key], expect[key])
    import pickle

    again = pickle.loads(pickle.dumps(stack.data))
    np.testing.assert_array_equal(np.asarray(again), expect)
