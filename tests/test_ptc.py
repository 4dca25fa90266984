"""Readers for Particle Tracking Challenge files and user annotations (tiny fake files in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from dmdet_infer.errors import InputError
from training.annotations import load_annotations, load_pair, read_points_csv
from training.ptc import iter_ptc_volumes, load_ptc_sequence, parse_ptc_name, read_ptc_xml, read_ptc_xml_meta

NAME = "VIRUS snr 7 density low"


def _write_xml(path: Path, truth: dict[int, np.ndarray]) -> None:
    lines = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
        "<root>",
        '<TrackContestISBI2012 SNR="7" density="low" generationDateTime="x" info="" scenario="VIRUS">',
    ]
    # One <particle> (track) per index, detections spread over frames, as in the challenge files.
    n = max(len(v) for v in truth.values())
    for i in range(n):
        lines.append("<particle>")
        for t, pos in truth.items():
            if i < len(pos):
                z, y, x = pos[i]
                lines.append(f'<detection t="{t}" x="{x}" y="{y}" z="{z}"/>')
        lines.append("</particle>")
    lines += ["</TrackContestISBI2012>", "</root>"]
    path.write_text("\n".join(lines))


@pytest.fixture()
def ptc_data(tmp_path: Path) -> tuple[Path, Path, np.ndarray, dict[int, np.ndarray]]:
    rng = np.random.default_rng(0)
    vols = rng.integers(0, 200, size=(3, 4, 6, 5)).astype(np.uint16)  # T, Z, Y, X
    truth = {0: np.array([[1.5, 2.25, 3.0], [0.0, 5.0, 4.0]]), 2: np.array([[3.0, 0.5, 0.25]])}
    folder = tmp_path / NAME
    folder.mkdir()
    for t in range(3):
        for z in range(4):
            tifffile.imwrite(folder / f"{NAME} t{t:03d} z{z:02d}.tif", vols[t, z])
    xml = tmp_path / f"{NAME}.xml"
    _write_xml(xml, truth)
    return folder, xml, vols, truth


def test_xml_reader(ptc_data) -> None:
    _, xml, _, truth = ptc_data
    got = read_ptc_xml(xml)
    assert sorted(got) == [0, 2]
    for t in truth:
        np.testing.assert_allclose(got[t], truth[t])  # x = column, y = row, z = slice -> zyx
    assert read_ptc_xml_meta(xml)["scenario"] == "VIRUS"
    assert parse_ptc_name(f"{NAME} t000 z00.tif") == {"scenario": "VIRUS", "snr": 7.0, "density": "low"}
    assert parse_ptc_name("stack.tif") is None


def test_slice_folder_round_trip(ptc_data) -> None:
    folder, xml, vols, truth = ptc_data
    items = list(load_ptc_sequence(folder, xml))
    assert [t for t, _, _ in items] == [0, 1, 2]
    for t, vol, pos in items:
        assert vol.dtype == np.float32 and vol.shape == (4, 6, 5)
        np.testing.assert_array_equal(vol, vols[t])
        np.testing.assert_allclose(pos, truth.get(t, np.zeros((0, 3))))
    assert all(pos is None for _, _, pos in load_ptc_sequence(folder))


def test_multipage_and_per_frame_files(ptc_data, tmp_path: Path) -> None:
    _, xml, vols, truth = ptc_data
    pages = tmp_path / "seq.tif"
    tifffile.imwrite(pages, vols.reshape(-1, 6, 5))  # plain pages, 4 slices per frame
    got = list(load_ptc_sequence(pages, xml, z_slices=4))
    assert len(got) == 3
    np.testing.assert_array_equal(got[1][1], vols[1])
    np.testing.assert_allclose(got[2][2], truth[2])
    hyper = tmp_path / "hyper.tif"
    tifffile.imwrite(hyper, vols, imagej=True, metadata={"axes": "TZYX"})
    got = list(iter_ptc_volumes(hyper, z_slices=99))  # axes from the ImageJ metadata
    assert len(got) == 3 and np.array_equal(got[2][1], vols[2])
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(3):
        tifffile.imwrite(frames / f"{NAME} t{t:03d}.tif", vols[t], photometric="minisblack")
    got = list(iter_ptc_volumes(frames))
    assert [t for t, _ in got] == [0, 1, 2] and np.array_equal(got[1][1], vols[1])
    with pytest.raises(InputError, match="not a multiple"):
        list(iter_ptc_volumes(pages, z_slices=5))


def test_ptc_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        list(iter_ptc_volumes(tmp_path / "missing"))
    with pytest.raises(InputError, match="no TIFF"):
        list(iter_ptc_volumes(tmp_path))
    bad = tmp_path / "bad.xml"
    bad.write_text("<root><oops>")
    with pytest.raises(InputError, match="bad.xml"):
        read_ptc_xml(bad)
    with pytest.raises(InputError, match="not found"):
        read_ptc_xml(tmp_path / "none.xml")


def test_annotations_pairs(tmp_path: Path) -> None:
    vol = np.arange(3 * 8 * 9, dtype=np.uint16).reshape(3, 8, 9)
    tifffile.imwrite(tmp_path / "a.tif", vol, photometric="minisblack")
    (tmp_path / "a.csv").write_text("x,Y, z ,label\n1.5,2,0,cell\n8,7,2,cell\n")
    tifffile.imwrite(tmp_path / "b.tif", vol, photometric="minisblack")
    (tmp_path / "b.csv").write_text("z,y,x,score,intensity\n")  # dmdet-infer output with no spots
    items = load_annotations(tmp_path)
    assert len(items) == 2
    np.testing.assert_array_equal(items[0][0], vol)
    np.testing.assert_allclose(items[0][1], [[0, 2, 1.5], [2, 7, 8]])
    assert items[1][1].shape == (0, 3)


def test_annotations_time_series_and_napari(tmp_path: Path) -> None:
    vol = np.zeros((2, 3, 8, 9), np.float32)
    tifffile.imwrite(tmp_path / "t.tif", vol, imagej=True, metadata={"axes": "TZYX"})
    (tmp_path / "t.csv").write_text("frame,z,y,x,score,intensity\n1,0,1,2,0.9,5\n0,1,2,3,0.8,4\n1,2,3,4,0.7,3\n")
    items = load_pair(tmp_path / "t.tif")
    assert len(items) == 2 and items[0][1].tolist() == [[1, 2, 3]] and len(items[1][1]) == 2
    napari = tmp_path / "points.csv"
    napari.write_text("index,axis-0,axis-1,axis-2\n0,1.0,2.0,3.0\n")
    pos, frames = read_points_csv(napari)
    assert pos.tolist() == [[1, 2, 3]] and frames is None


def test_annotation_errors(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((3, 8, 9), np.uint8), photometric="minisblack")
    with pytest.raises(InputError, match="s.csv.*not found"):
        load_pair(tmp_path / "s.tif")
    (tmp_path / "s.csv").write_text("x,y\n1,2\n")
    with pytest.raises(InputError, match="missing column.*z"):
        load_pair(tmp_path / "s.tif")
    (tmp_path / "s.csv").write_text("z,y,x\n1,2,abc\n")
    with pytest.raises(InputError, match="non-numeric"):
        load_pair(tmp_path / "s.tif")
    (tmp_path / "s.csv").write_text("z,y,x\n1,2,30\n")
    with pytest.raises(InputError, match="outside the stack"):
        load_pair(tmp_path / "s.tif")
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((8, 9), np.uint8))
    (tmp_path / "flat.csv").write_text("z,y,x\n")
    with pytest.raises(InputError, match="flat.tif.*3D"):
        load_pair(tmp_path / "flat.tif")
    with pytest.raises(InputError, match="not found"):
        load_annotations(tmp_path / "nope")
