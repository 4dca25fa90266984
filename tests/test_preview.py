"""Tests for dmdet_infer.preview: MIP picture, rings, scaling and the standard-library PNG writer."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from dmdet_infer import preview
from dmdet_infer.errors import InputError
from dmdet_infer.preview import SPOT_COLOUR, TRUTH_COLOUR, encode_png, mip_rgb, write_preview

GREY = (128, 128, 128)


def decode_png(data: bytes) -> tuple[np.ndarray, dict[str, str]]:
    """Minimal independent decoder for 8-bit RGB, non-interlaced PNGs: checks CRCs, undoes filter 0 only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, text, header = 8, b"", {}, None
    kinds = []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        kinds.append(kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"iTXt":
            key, rest = body.split(b"\0", 1)
            text[key.decode("latin-1")] = rest[2:].split(b"\0", 2)[2].decode("utf-8")
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and pos == len(data)
    width, height, depth, colour_type, _, _, interlace = header
    assert (depth, colour_type, interlace) == (8, 2, 0)
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(height, width, 3), text


def _flat(shape=(3, 64, 64), value=7.0) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def test_encode_png_round_trip():
    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    pixels, text = decode_png(encode_png(rgb, {"Title": "plate 3 – µ"}))
    np.testing.assert_array_equal(pixels, rgb)
    assert text == {"Title": "plate 3 – µ"}


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
                                 np.zeros((0, 4, 3), np.uint8), np.zeros((4, 4, 4), np.uint8)])
def test_encode_png_rejects_bad_arrays(bad):
    with pytest.raises(ValueError):
        encode_png(bad)


def test_write_preview_decodes_with_matplotlib(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    vol = np.random.default_rng(1).poisson(10, size=(4, 40, 50)).astype(np.uint16)
    spots = np.array([[1.0, 10.0, 12.0]])
    truth = np.array([[2.0, 30.0, 35.0]])
    path = tmp_path / "preview.png"
    write_preview(path, vol, spots, truth, title="test")
    expected = mip_rgb(vol, spots, truth)
    decoded = image.imread(path)
    np.testing.assert_array_equal(np.rint(decoded[..., :3] * 255).astype(np.uint8), expected)
    pixels, text = decode_png(path.read_bytes())
    np.testing.assert_array_equal(pixels, expected)
    assert text["Title"] == "test" and "magenta" in text["Description"] and "green" in text["Description"]


def test_projection_and_contrast():
    vol = np.zeros((5, 20, 30), dtype=np.float32)
    vol[:, :, :] = np.linspace(0, 100, 30)[None, None, :]  # ramp along x
    vol[3, 10, 5] = 1000.0  # bright voxel deep in z: the projection must show it
    vol[1, 4, 4] = np.nan  # a NaN is ignored by the projection
    rgb = mip_rgb(vol, [], scale=1)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()  # grey
    assert tuple(rgb[10, 5]) == (255, 255, 255)
    assert rgb[0, 0, 0] == 0 and rgb[0, 29, 0] > 240
    assert rgb[4, 4, 0] == rgb[5, 4, 0]
    assert (np.diff(rgb[0, :, 0].astype(int)) >= 0).all()


@pytest.mark.parametrize("shape, scale, expected", [
    ((2, 64, 64), None, (512, 512)),  # upscaled by 8
    ((2, 100, 30), None, (600, 180)),  # longer side to >= 512: factor 6
    ((1, 600, 700), None, (600, 700)),  # already in range
    ((1, 10, 4100), None, (4, 1367)),  # downscaled by block 3
    ((1, 10, 20), 3, (30, 60)),  # explicit factor
])
def test_size(shape, scale, expected):
    assert mip_rgb(np.zeros(shape, np.uint8), [], scale=scale).shape == (*expected, 3)


def test_downscale_keeps_bright_pixels_and_maps_spots():
    vol = np.zeros((1, 10, 4100), dtype=np.float32)
    vol[0, 5, 4000] = 50.0
    rgb = mip_rgb(vol, [[0.0, 5.0, 4000.0]])
    cy, cx = 5 // 3, 4000 // 3  # block 3
    assert tuple(rgb[cy, cx]) == (255, 255, 255)  # block maximum, not mean
    assert tuple(rgb[cy, cx + 4]) == SPOT_COLOUR  # ring of radius 4 around the mapped centre


@pytest.mark.parametrize("scale", [0, -1, 1.5, True])
def test_bad_scale(scale):
    with pytest.raises(InputError, match="scale"):
        mip_rgb(_flat(), [], scale=scale)


def test_scale_too_large():
    with pytest.raises(InputError, match="at most"):
        mip_rgb(_flat((1, 10, 100)), [], scale=1000)


def test_spot_and_truth_rings_at_scale_1():
    spots = np.array([[1.0, 20.0, 30.0]])
    truth = np.array([[1.0, 40.0, 30.2], [0.0, 20.0, 30.0]])  # second truth point coincides with the spot
    rgb = mip_rgb(_flat(), spots, truth, scale=1)
    ring = [(20, 34), (20, 26), (16, 30), (24, 30)]
    for y, x in ring:
        assert tuple(rgb[y, x]) == SPOT_COLOUR
    for y, x in [(20, 30), (20, 32), (22, 31)]:  # centre and inside the ring stay as the image
        assert tuple(rgb[y, x]) == GREY
    for y, x in [(20, 36), (20, 24), (14, 30), (26, 30), (40, 36), (34, 30)]:  # truth: larger green rings
        assert tuple(rgb[y, x]) == TRUTH_COLOUR
    assert tuple(rgb[40, 30]) == GREY
    assert SPOT_COLOUR != TRUTH_COLOUR
    n_spot = (rgb == SPOT_COLOUR).all(axis=2).sum()
    assert 20 <= n_spot <= 40  # one thin ring of radius 4


def test_ring_position_when_upscaled():
    rgb = mip_rgb(_flat(), [[0.0, 10.0, 10.0]])  # 64 px -> factor 8
    c = 84  # input pixel 10 spans output 80..87; nearest centre pixel is 84
    assert rgb.shape[0] == 512
    assert tuple(rgb[c, c]) == GREY
    r = np.hypot(*np.nonzero((rgb == SPOT_COLOUR).all(axis=2)) - np.array([[c], [c]]))
    assert r.min() > 28 and r.max() < 33  # radius 4 input px = 32 output px


def test_constant_and_empty():
    rgb = mip_rgb(_flat(value=3.0), np.empty((0, 3)), [])
    assert (rgb == 128).all()
    assert (mip_rgb(np.zeros((1, 4, 4), np.uint16), [], scale=1) == 128).all()


def test_points_outside_or_not_finite_are_safe():
    rgb = mip_rgb(_flat(), [[0, -2.0, 1.0], [0, np.nan, 3.0], [0, 1e30, 5.0], [0, 900.0, -900.0]], scale=1)
    assert tuple(rgb[2, 1]) == SPOT_COLOUR  # the part of the edge ring that is inside the image
    assert (rgb == SPOT_COLOUR).all(axis=2).sum() < 20


@pytest.mark.parametrize("volume, spots", [
    (np.zeros((8, 8)), []),  # 2D
    (np.zeros((0, 8, 8)), []),  # empty
    (np.zeros((2, 8, 8), complex), []),
    (np.zeros((2, 8, 8)), np.zeros((3, 2))),  # spots are not zyx
])
def test_bad_input_writes_nothing(tmp_path, volume, spots):
    path = tmp_path / "out.png"
    with pytest.raises(InputError) as info:
        write_preview(path, volume, spots)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    monkeypatch.setattr(preview, "encode_png", lambda rgb, text=None: object())  # handle.write() will fail
    with pytest.raises(TypeError):
        write_preview(path, _flat(), [])
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.png"]


def test_write_replaces_existing(tmp_path):
    path = Path(tmp_path) / "out.png"
    path.write_bytes(b"old")
    write_preview(path, _flat(), [[0, 5, 5]], scale=1)
    pixels, text = decode_png(path.read_bytes())
    assert pixels.shape == (64, 64, 3) and "1 detected" in text["Description"] and "Title" not in text
