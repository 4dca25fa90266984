"""The command line end to end, including every bad input of the issue: exit code, one-line message, no output."""

import subprocess
import sys

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from onnx_models import render_spots

from dmdet_infer.cli import main

TRUTH = np.array([[3.0, 10.2, 12.7], [5.4, 30.0, 40.3], [2.0, 45.6, 20.1]])


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture()
def stack(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, render_spots((8, 56, 56), TRUTH).astype(np.uint16), imagej=True,
                     resolution=(10.0, 10.0), metadata={"spacing": 0.3, "unit": "um", "axes": "ZYX"})
    return path


def read_csv(path):
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]]).reshape(-1, len(header))
    return header, rows


def test_one_stack_to_csv(stack, tmp_path, pooled_model_path):
    out = tmp_path / "spots.csv"
    result = run(stack, "-o", out, "--model", pooled_model_path)
    assert result.exit_code == 0, result.output
    assert f"3 spots -> {out}" in result.stdout
    header, rows = read_csv(out)
    assert header == ["z", "y", "x", "score", "intensity", "z_um", "y_um", "x_um", "mass", "spread", "split"]
    assert rows.shape == (3, 11)
    np.testing.assert_allclose(rows[:, 5:8], rows[:, :3] * [0.3, 0.1, 0.1], atol=1e-3)


def test_options_reach_the_detector(stack, tmp_path, pooled_model_path):
    out = tmp_path / "s.csv"
    result = run(stack, "-o", out, "--model", pooled_model_path, "--threshold", "0.999999", "-q",
                 "--voxel-size", "1,2,2", "--tile", "4,16,16", "--min-distance", "1,3,3", "--refine", "none")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    header, rows = read_csv(out)
    assert rows.shape[0] == 0 and header[7] == "x_um"


def test_folder_of_stacks_keeps_going_past_a_bad_file(stack, tmp_path, pooled_model_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.tif").write_bytes(stack.read_bytes())
    (folder / "b.tif").write_bytes(b"garbage" * 100)
    (folder / "c.ome.tif").write_bytes(stack.read_bytes())
    out = tmp_path / "out"
    result = run(folder, "-o", out, "--model", pooled_model_path)
    assert result.exit_code == 2
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "c.csv"]
    assert "b.tif" in result.stderr and "Traceback" not in result.output


def test_timelapse_gets_a_frame_column(tmp_path, pooled_model_path):
    movie = np.stack([render_spots((8, 56, 56), TRUTH, seed=s) for s in range(3)]).astype(np.uint16)
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, movie, imagej=True, metadata={"axes": "TZYX"})
    out = tmp_path / "movie.csv"
    result = run(path, "-o", out, "--model", pooled_model_path, "-q")
    assert result.exit_code == 0, result.output
    header, rows = read_csv(out)
    assert header[0] == "frame"
    assert sorted(set(rows[:, 0].astype(int))) == [0, 1, 2]


def _bad_inputs(tmp_path):
    cases = {}
    cases["missing"] = (tmp_path / "missing.tif", "not found|does not exist|no such")
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\xff" * 64)
    cases["corrupt"] = (corrupt, "TIFF")
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.ones((32, 32), np.uint16))
    cases["2d"] = (flat, "2D")
    five = tmp_path / "five.tif"
    tifffile.imwrite(five, np.ones((2, 2, 2, 8, 8), np.uint16))
    cases["5d"] = (five, "axes")
    nan = tmp_path / "nan.tif"
    data = np.ones((4, 8, 8), np.float32)
    data[1, 2, 3] = np.nan
    tifffile.imwrite(nan, data, photometric="minisblack")
    cases["nan"] = (nan, "NaN|non-finite")
    inf = tmp_path / "inf.tif"
    data[1, 2, 3] = np.inf
    tifffile.imwrite(inf, data, photometric="minisblack")
    cases["inf"] = (inf, "Inf|non-finite")
    return cases


@pytest.mark.parametrize("case", ["missing", "corrupt", "2d", "5d", "nan", "inf"])
def test_bad_input_one_line_exit_2_no_output(tmp_path, pooled_model_path, case):
    path, words = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out.csv"
    result = run(path, "-o", out, "--model", pooled_model_path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert path.name in lines[0]
    import re

    assert re.search(words, lines[0], re.IGNORECASE), lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))]


def test_empty_array_is_refused(tmp_path, pooled_model_path):
    from dmdet_infer import Detector
    from dmdet_infer.errors import InputError

    with pytest.raises(InputError, match="empty"):
        Detector(pooled_model_path).detect(np.zeros((3, 0, 8), np.uint16))


@pytest.mark.parametrize("content", [b"not onnx" * 50, b""])
def test_corrupt_model_exit_2(stack, tmp_path, content):
    model = tmp_path / "broken.onnx"
    model.write_bytes(content)
    out = tmp_path / "out.csv"
    result = run(stack, "-o", out, "--model", model)
    assert result.exit_code == 2
    assert "broken.onnx" in result.stderr and "ONNX" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_constant_image_zero_spots_exit_0(tmp_path, pooled_model_path):
    path = tmp_path / "const.tif"
    tifffile.imwrite(path, np.full((4, 16, 16), 7, np.uint16), photometric="minisblack")
    out = tmp_path / "c.csv"
    result = run(path, "-o", out, "--model", pooled_model_path)
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines() == ["z,y,x,score,intensity,mass,spread,split"]


def test_bad_option_values(stack, tmp_path, pooled_model_path):
    for args in (["--tile", "4,16"], ["--voxel-size", "a,b,c"], ["--threshold", "2"], ["--device", "tpu"],
                 ["--precision", "int4"]):
        result = run(stack, "-o", tmp_path / "x.csv", "--model", pooled_model_path, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "x.csv").exists()


def test_bf16_where_it_cannot_run_is_one_line(stack, tmp_path, pooled_model_path):
    """--precision bf16 through ONNX Runtime (or on a CPU without bf16): exit 2, one line saying why, no file."""
    result = run(stack, "-o", tmp_path / "x.csv", "--model", pooled_model_path, "--runtime", "onnxruntime",
                 "--precision", "bf16")
    assert result.exit_code == 2 and "precision bf16 runs through OpenVINO on the CPU" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.csv").exists()


def test_help_documents_every_option_with_examples():
    result = run("--help")
    assert result.exit_code == 0
    for option in ("--output", "--model", "--device", "--threshold", "--min-distance", "--voxel-size",
                   "--channel", "--axes", "--tile", "--quiet", "--version", "dmdet-infer stack.tif -o spots.csv"):
        assert option in result.output


def test_version_and_entry_point_in_a_subprocess(model_path):
    proc = subprocess.run([sys.executable, "-m", "dmdet_infer.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime" in proc.stdout and "numba" in proc.stdout and "CPUExecutionProvider" in proc.stdout


def test_preview_png_with_truth(stack, tmp_path, pooled_model_path):
    truth = tmp_path / "truth.csv"
    truth.write_text("z,y,x\n" + "\n".join(",".join(map(str, p)) for p in TRUTH) + "\n")
    picture = tmp_path / "preview.png"
    result = run(stack, "-o", tmp_path / "s.csv", "--model", pooled_model_path, "--preview", picture,
                 "--truth", truth)
    assert result.exit_code == 0, result.output
    matplotlib_image = pytest.importorskip("matplotlib.image")  # only to read the PNG back

    rgb = (matplotlib_image.imread(picture)[..., :3] * 255).round().astype(int)
    assert rgb.shape[1] >= 512
    magenta = ((rgb[..., 0] == 255) & (rgb[..., 1] == 0) & (rgb[..., 2] == 255)).sum()
    green = ((rgb[..., 0] == 0) & (rgb[..., 1] == 255) & (rgb[..., 2] == 0)).sum()
    assert magenta > 50 and green > 50


def test_truth_csv_without_columns_is_refused(stack, tmp_path, pooled_model_path):
    truth = tmp_path / "truth.csv"
    truth.write_text("a,b\n1,2\n")
    result = run(stack, "-o", tmp_path / "s.csv", "--model", pooled_model_path, "--preview", tmp_path / "p.png",
                 "--truth", truth)
    assert result.exit_code == 2
    assert "truth.csv" in result.stderr and "z,y,x" in result.stderr
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "p.png").exists()


# --- outputs that would destroy data, and inputs that are not files (issue 16 items 1, 2, 4, 6, 11) ---


def test_output_or_preview_naming_the_input_is_refused_and_the_input_kept(stack, tmp_path, pooled_model_path):
    before = stack.read_bytes()
    for args in (("-o", stack), ("-o", tmp_path / "s.csv", "--preview", stack),
                 ("-o", tmp_path / "s.csv", "--preview", tmp_path / "s.csv")):
        result = run(stack, *args, "--model", pooled_model_path)
        assert result.exit_code == 2, result.output
        assert "error:" in result.output and len(result.output.strip().splitlines()) == 1
        assert stack.read_bytes() == before
    assert not (tmp_path / "s.csv").exists()


def test_special_files_and_links_as_output_are_refused(stack, tmp_path, pooled_model_path):
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    target = tmp_path / "kept.csv"
    target.write_text("keep me")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    for out, reason in ((fifo, "not a regular file"), (link, "symbolic link"), (tmp_path / "no" / "s.csv",
                                                                                 "does not exist")):
        result = run(stack, "-o", out, "--model", pooled_model_path)
        assert result.exit_code == 2 and reason in result.output, result.output
    assert fifo.exists() and not fifo.is_file() and link.is_symlink() and target.read_text() == "keep me"


def test_a_fifo_as_input_is_refused_at_once(tmp_path, pooled_model_path):
    import os

    fifo = tmp_path / "in.tif"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "dmdet_infer.cli", str(fifo), "-o", str(tmp_path / "s.csv"),
                           "--model", str(pooled_model_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_file_among_good_ones_does_not_stop_the_batch(stack, tmp_path, pooled_model_path):
    out = tmp_path / "out"
    result = run(tmp_path / "missing.tif", stack, tmp_path / "none*.tif", "-o", out, "--model", pooled_model_path)
    assert result.exit_code == 2
    assert "missing.tif" in result.output and "none*.tif" in result.output
    assert (out / "stack.csv").exists() and read_csv(out / "stack.csv")[1].shape[0] == 3


def test_a_compressed_tiff_without_its_decoder_names_the_package(tmp_path, pooled_model_path):
    """Issue 16 item 10: an LZW stack is not "corrupt": the message says which package reads it."""
    pytest.importorskip("tifffile")
    try:
        import imagecodecs  # noqa: F401
        pytest.skip("imagecodecs is installed: LZW stacks are read")
    except ImportError:
        pass
    path = tmp_path / "lzw.tif"
    tifffile.imwrite(path, render_spots((8, 32, 32), TRUTH[:1]).astype(np.uint16))
    with tifffile.TiffFile(path) as tif:
        offsets = [page.tags["Compression"].valueoffset for page in tif.pages]
    data = bytearray(path.read_bytes())
    for offset in offsets:  # mark the pages LZW-compressed, as a decoder-less tifffile cannot write them
        data[offset:offset + 2] = (5).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    result = run(path, "-o", tmp_path / "s.csv", "--model", pooled_model_path)
    assert result.exit_code == 2
    assert "pip install imagecodecs" in result.output and "corrupt" not in result.output


def test_an_ome_tiff_promising_more_planes_than_stored_is_refused(tmp_path, pooled_model_path):
    """Issue 16 item 3: SizeZ 100 with 10 planes stored was read zero-filled, with a third of the spots."""
    path = tmp_path / "short.ome.tif"
    tifffile.imwrite(path, render_spots((10, 32, 32), TRUTH[:1]).astype(np.uint16), ome=True,
                     metadata={"axes": "ZYX"})
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    tifffile.tiffcomment(path, xml.replace('SizeZ="10"', 'SizeZ="100"').encode())
    result = run(path, "-o", tmp_path / "s.csv", "--model", pooled_model_path)
    assert result.exit_code == 2 and "incomplete file" in result.output and "90" in result.output, result.output
    assert not (tmp_path / "s.csv").exists()


def test_unusable_tile_memory_and_scheduler_give_one_line(stack, tmp_path, pooled_model_path):
    """Issue 16 item 5: --tile-memory inf and --scheduler garbage://x gave tracebacks."""
    for args in (("--tile-memory", "inf"), ("--scheduler", "garbage://x")):
        proc = subprocess.run([sys.executable, "-m", "dmdet_infer.cli", str(stack), "-o", str(tmp_path / "s.csv"),
                               "--model", str(pooled_model_path), *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and "rror:" in proc.stderr, proc.stderr  # click usage or one line
        assert args[0] in proc.stderr


_CUT_WHILE_READING = """
import os
from dmdet_infer import cli, zarr_io

read = zarr_io.read_input


def read_then_cut(path, **kwargs):
    stack = read(path, **kwargs)
    if path.name == "victim.tif":  # another program truncates the file while the run reads it
        os.truncate(path, 4096)
    return stack


zarr_io.read_input = read_then_cut
cli.main()
"""


def test_an_input_truncated_while_it_is_read_is_one_line_and_the_batch_goes_on(tmp_path, pooled_model_path):
    """Issue 16 item 7: the memory-mapped input died with SIGBUS (exit -7, no message) when the file shrank."""
    victim = tmp_path / "victim.tif"
    tifffile.imwrite(victim, render_spots((16, 128, 128), TRUTH).astype(np.uint16), imagej=True,
                     metadata={"axes": "ZYX"})
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, render_spots((8, 56, 56), TRUTH).astype(np.uint16))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", _CUT_WHILE_READING, str(victim), str(good), "-o", str(out),
                           "--model", str(pooled_model_path), "-q"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "victim.tif: " in lines[0], proc.stderr
    assert "truncated" in lines[0].split("victim.tif: ", 1)[1], lines[0]  # the tmp folder is named after the test
    assert sorted(p.name for p in out.iterdir()) == ["good.csv"]
    assert read_csv(out / "good.csv")[1].shape[0] == 3


@pytest.mark.parametrize("kind", ["plain", "imagej", "ome"])
def test_a_truncated_multipage_tiff_is_called_truncated_not_2d(tmp_path, pooled_model_path, kind):
    """Issue 16 item 11: a 10-page stack cut in half was refused as a "2D image" (ImageJ, OME) or as "corrupt"."""
    path = tmp_path / "cut.tif"
    options = {"plain": {}, "imagej": {"imagej": True}, "ome": {"ome": True}}[kind]
    tifffile.imwrite(path, render_spots((10, 64, 64), TRUTH).astype(np.uint16), **options)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    result = run(path, "-o", tmp_path / "s.csv", "--model", pooled_model_path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cut.tif: " in lines[0], result.stderr
    message = lines[0].split("cut.tif: ", 1)[1]  # the tmp folder is named after the test
    assert "truncated" in message and "2D" not in message, lines[0]
    assert not (tmp_path / "s.csv").exists()


def test_a_tile_smaller_than_the_network_needs_is_warned_about(stack, tmp_path):
    """Issue 16 item 11: --tile 1,1,1 ran 100x longer without a word."""
    from onnx_models import default_info, smoothing_model

    from dmdet_infer.tiling import work

    model = tmp_path / "wide.onnx"
    smoothing_model(model, info=default_info(halo_zyx=(4, 12, 12)))
    assert work((8, 56, 56), (8, 56, 56), (4, 12, 12), (1, 1, 1)) == 8 * 56 * 56  # one tile: no halo to re-read
    assert work((8, 56, 56), (2, 8, 8), (4, 12, 12), (1, 1, 1)) > 20 * 8 * 56 * 56
    result = run(stack, "-o", tmp_path / "s.csv", "--model", model, "--tile", "2,8,8", "-q")
    assert result.exit_code == 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "--tile 2,8,8" in lines[0], result.stderr
    assert "4,12,12" in lines[0] and "leave --tile out" in lines[0]
    for fine in ("8,56,56", "8,32,32"):  # whole, or two tiles a side: no warning
        result = run(stack, "-o", tmp_path / "s.csv", "--model", model, "--tile", fine, "-q")
        assert result.exit_code == 0 and result.stderr == "", (fine, result.stderr)


def test_huge_float_values_give_no_numpy_warnings(tmp_path, pooled_model_path):
    """Issue 16 item 11: float64 values beyond float32's range, float32 values near its limit and a dynamic range of
    1e30 printed numpy RuntimeWarnings (overflow in cast, reduce, subtract) and then wrote inf intensities or read
    the stack as noise. Now: refused in one line each, or detected with finite numbers and no warning."""
    rng = np.random.default_rng(0)
    noise = rng.poisson(10.0, (8, 48, 48)).astype(np.float64)
    one = noise.copy()
    one[2, 10, 10] = 1e300
    alternating = np.full((8, 48, 48), 3e38, np.float32)
    alternating[::2] = -3e38
    faint = rng.normal(0.0, 1e-25, (8, 48, 48))
    faint[4, 20, 20] = 1e5
    stacks = {"f64_1e300.tif": noise * 1e300, "f64_one_voxel.tif": one, "f32_3e38.tif": alternating,
              "f64_dynamic.tif": faint, "f32_dynamic.tif": faint.astype(np.float32),
              "f32_subnormal.tif": (noise * 1e-41).astype(np.float32)}
    for name, data in stacks.items():
        tifffile.imwrite(tmp_path / name, data, photometric="minisblack")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "dmdet_infer.cli", *[str(tmp_path / n) for n in stacks], "-o",
                           str(out), "--model", str(pooled_model_path), "-q"], capture_output=True, text=True,
                          timeout=300)
    assert "Warning" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    refused = {"f64_1e300.tif": "float64 values beyond float32 range", "f64_one_voxel.tif": "1 voxel(s) hold float64",
               "f32_3e38.tif": "values beyond ±1e+30"}
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(refused), proc.stderr
    for name, words in refused.items():
        assert any(f"{name}: " in line and words in line for line in lines), (name, proc.stderr)
    assert proc.returncode == 2
    written = sorted(p.name for p in out.iterdir())
    assert written == ["f32_dynamic.csv", "f32_subnormal.csv", "f64_dynamic.csv"]
    for name in written:
        header, rows = read_csv(out / name)
        assert header[:5] == ["z", "y", "x", "score", "intensity"] and np.isfinite(rows).all()


@pytest.mark.parametrize("args", [["--level", "-1"], ["--tile", "4,16"], ["--foo"], ["--threshold", "x"], []])
def test_usage_errors_are_one_line_too(stack, tmp_path, pooled_model_path, args):
    """Found by tests/test_fuzz.py: click printed a bad option value as four lines (usage, hint, blank, error)."""
    inputs = [stack, "-o", tmp_path / "x.csv", "--model", pooled_model_path] if args else []
    result = run(*inputs, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dmdet-infer: error: "), result.stderr
    assert (args[0] if args else "STACK") in lines[0] and "--help" in lines[0]
    assert not (tmp_path / "x.csv").exists()


def test_an_absurd_voxel_size_is_refused_not_written_as_inf(stack, tmp_path, pooled_model_path):
    """Found by tests/test_fuzz.py: --voxel-size 1e308,1,1 overflowed the z_um column to inf (numpy warning)."""
    result = run(stack, "-o", tmp_path / "s.csv", "--model", pooled_model_path, "--voxel-size", "1e308,1,1")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--voxel-size 1e+308,1,1 must be" in lines[0] and "at most 1e+06" in lines[0]
    assert not (tmp_path / "s.csv").exists()
    result = run(stack, "-o", tmp_path / "s.csv", "--model", pooled_model_path, "--voxel-size", "1e6,1e-9,1")
    assert result.exit_code == 0 and "x_um" in read_csv(tmp_path / "s.csv")[0]


@pytest.mark.parametrize("size", ["1e-9,1e-9um", "1e9,1e9", "0.1,1.5"])
def test_a_spot_size_that_would_resample_by_orders_of_magnitude_is_refused(stack, tmp_path, pooled_model_path, size):
    """Found by tests/test_fuzz.py: --spot-size 1e-9,1e-9um resampled the stack by 1e9 per axis (MemoryError as
    an internal error, or the machine's OOM killer); 1e9,1e9 padded by 1e9 voxels for its box filter."""
    result = run(stack, "-o", tmp_path / "s.csv", "--model", pooled_model_path, "--voxel-size", "1",
                 "--spot-size", size)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"error: --spot-size {size} is a σ of" in lines[0], result.stderr  # before any work


def test_a_resampled_copy_beyond_the_memory_budget_is_refused(monkeypatch):
    from dmdet_infer import scale
    from dmdet_infer.errors import InputError

    volume = np.zeros((8, 32, 32), np.uint16)
    assert scale.resample(volume, (2.0, 2.0, 2.0)).shape == (15, 63, 63)
    monkeypatch.setattr(scale, "MAX_RESAMPLED_BYTES", 15 * 63 * 63 * 4 - 1)
    with pytest.raises(InputError, match=r"would need .* GiB.*spot_size='off'"):
        scale.resample(volume, (2.0, 2.0, 2.0))


def test_a_spot_size_in_microns_is_checked_with_each_stacks_voxel_size(stack, tmp_path, pooled_model_path):
    """The range check of --spot-size (above) must not assume 1 µm voxels before the stack is read: 0.19 µm is 1.9
    voxels of this stack's 0.1 µm."""
    result = run(stack, "-o", tmp_path / "s.csv", "--model", pooled_model_path, "--spot-size", "fwhm=1.4,0.45um")
    assert result.exit_code == 0, result.output
    result = run(stack, "-o", tmp_path / "s.csv", "--model", pooled_model_path, "--spot-size", "0.001,0.001um")
    assert result.exit_code == 2 and "stack.tif: --spot-size 0.001,0.001um is a σ of" in result.stderr


def test_the_network_running_out_of_memory_is_one_line_exit_2(stack, tmp_path, pooled_model_path, monkeypatch):
    """ONNX Runtime's std::bad_alloc (a tile too large for the memory) was an 'internal error', exit 1."""
    from dmdet_infer.model import Model

    def out_of_memory(self, x, options=None):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while "
                           "running Conv node. Status Message: std::bad_alloc")

    monkeypatch.setattr(Model, "_forward", out_of_memory)
    result = run(stack, "-o", tmp_path / "s.csv", "--model", pooled_model_path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not enough memory to run the network" in lines[0] and "--tile" in lines[0]
    assert not (tmp_path / "s.csv").exists()


def test_api_errors_name_parameters_and_the_cli_names_its_flags(stack, tmp_path, pooled_model_path, monkeypatch):
    """Issue 17: a Python caller never typed a flag, so the API's messages name its parameters; the command line
    prints the same messages with its flags."""
    from dmdet_infer import Detector, InputError, read_stack
    from dmdet_infer.cli import flag_names
    from dmdet_infer.model import Model

    def message(call, *args, **kwargs):
        with pytest.raises(InputError) as info:
            call(*args, **kwargs)
        assert "--" not in str(info.value), str(info.value)
        return str(info.value)

    def cli_line(*args):
        result = run(stack, "-o", tmp_path / "s.csv", "--model", pooled_model_path, *args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
        assert not (tmp_path / "s.csv").exists()
        return lines[0]

    assert message(Detector, pooled_model_path, threshold=1.5).startswith("threshold must be in [0, 1)")
    assert message(Detector, pooled_model_path, threshold="x").startswith("threshold must be a number in [0, 1)")
    assert "error: --threshold must be in [0, 1)" in cli_line("--threshold", "1.5")
    tile = message(Detector, pooled_model_path, tile=(0, 8, 8))
    assert tile.startswith("tile needs three positive sizes Z,Y,X")
    assert flag_names(tile).startswith("--tile needs three positive sizes Z,Y,X")  # the CLI refuses it itself
    channel = message(read_stack, stack, channel=3)
    assert "channel=3 is out of range: the file has 1 channel (axes ZYX); use channel=0" in channel
    assert "--channel 3 is out of range: the file has 1 channel (axes ZYX); use --channel 0" in cli_line(
        "--channel", "3")

    def out_of_memory(self, x, options=None):
        raise RuntimeError("std::bad_alloc")

    monkeypatch.setattr(Model, "_forward", out_of_memory)
    volume = tifffile.imread(stack)
    assert "pass a smaller tile= or tile_memory=" in message(Detector(pooled_model_path).detect, volume)
    assert "pass a smaller --tile or --tile-memory" in cli_line("--tile", "8,56,56")


@pytest.mark.parametrize("api,cli", [
    ("threshold must be a number in [0, 1) or 'auto', got 'x'", "--threshold must be a number in [0, 1) or 'auto', "
                                                                 "got 'x'"),
    ("a/threshold/b.tif: channel=2 is out of range: the file has 1 channel (axes ZYX); use channel=0 or leave it out",
     "a/threshold/b.tif: --channel 2 is out of range: the file has 1 channel (axes ZYX); use --channel 0 or leave "
     "it out"),
    ("b.tif: has 3 channels (axes CZYX); pass channel=K with K in 0..2 to pick one, or axes= with Z in place of C",
     "b.tif: has 3 channels (axes CZYX); pass --channel K with K in 0..2 to pick one, or --axes with Z in place of C"),
    ("b.zarr: the axes YX have no Z; pass axes=, e.g. axes='TZYX'", "b.zarr: the axes YX have no Z; pass --axes, "
                                                                   "e.g. --axes TZYX"),
    ("spot_size='fwhm=1,2um' is a σ of 0.4,0.8 voxels", "--spot-size fwhm=1,2um is a σ of 0.4,0.8 voxels"),
    ("m.onnx: min_distance needs one value or three", "m.onnx: --min-distance needs one value or three"),
    ("--preview is not available with --scheduler/--workers", "--preview is not available with --scheduler/--workers"),
    ("m.onnx: not a dmdet model: missing dmdet metadata dmdet.threshold", "m.onnx: not a dmdet model: missing dmdet "
                                                                        "metadata dmdet.threshold"),
])
def test_flag_names_rewrites_parameters_only(api, cli):
    from dmdet_infer.cli import flag_names

    assert flag_names(api) == cli
