"""Property-based fuzzing of ``dmdet-infer`` (issue 16): whatever the stack file, the options and the model, the
command exits 0 with a valid spot table, or 2 with exactly one error line on stderr (one per bad input in a batch;
plus, at most, the one-line --tile warning); never a traceback, never exit 1 ("internal error"), never a hang,
never a numpy or library warning or log line on stderr, and the input is byte-identical afterwards. No temporary
file is left behind.

Cases: 1D to 5D arrays, tiny to 8x48x48, of every common pixel type (bool, int8-64, uint8-32, float16-64), with
noise, spots, constants, extremes, ramps, NaN/Inf/huge/subnormal values; written as plain, ImageJ, OME, BigTIFF,
page-by-page or compressed TIFF, Zarr or OME-Zarr, or as garbage; then maybe truncated or with bytes flipped;
random option values (--threshold, --min-distance, --tile, --voxel-size, --spot-size, --channel, --axes, --refine,
--level, ...); the test model, the shipped model, or a copy of either with its metadata mutated.

CI runs a fixed (derandomized) set of ``DMDET_FUZZ_EXAMPLES`` cases (default 150, and a twentieth of that in real
processes) in about 20 s. A long local run: ``DMDET_FUZZ_EXAMPLES=2000 DMDET_FUZZ_SEED=1 python -m pytest -q
tests/test_fuzz.py`` (any seed; a failure prints the case to reproduce); ``DMDET_FUZZ_LOG=cases.jsonl`` records
every case and its outcome.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dmdet_infer.cli import main  # noqa: E402

EXAMPLES = int(os.environ.get("DMDET_FUZZ_EXAMPLES", "150"))
SEED = os.environ.get("DMDET_FUZZ_SEED")
CASE_SECONDS = 120  # a case that runs longer is a hang
DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "float16", "float32", "float64")
HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)  # Python's default


def fuzz(examples: int):
    """Hypothesis settings for ``examples`` cases: reproducible in CI (derandomized), seeded when DMDET_FUZZ_SEED
    is set."""
    def wrap(test):
        test = settings(max_examples=examples, deadline=None, derandomize=SEED is None, database=None,
                        print_blob=True, suppress_health_check=list(HealthCheck))(test)
        return test if SEED is None else seed(int(SEED))(test)
    return wrap


# ------------------------------------------------------------------------------------------------ the stack


@st.composite
def arrays(draw) -> np.ndarray:
    ndim = draw(st.sampled_from([3] * 6 + [4, 4, 5, 2, 1]))
    typical = draw(st.integers(0, 3)) < 3  # mostly stacks that should give spots; else any size from 1 voxel
    if ndim == 1:
        shape: tuple[int, ...] = (draw(st.integers(1, 64)),)
    elif typical:
        lead = tuple(draw(st.integers(2, 8 if ndim == 3 else 3)) for _ in range(ndim - 2))
        shape = lead + (draw(st.integers(16, 48)), draw(st.integers(16, 48)))
    else:
        lead = tuple(draw(st.integers(1, 8 if ndim == 3 else 3)) for _ in range(ndim - 2))
        shape = lead + (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    dtype = np.dtype(draw(st.sampled_from(["uint16"] * 4 + ["uint8", "float32"] * 2 + list(DTYPES))))
    kind = draw(st.sampled_from(["spots"] * 4 + ["noise", "constant", "extremes", "special", "ramp"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    scale = draw(st.sampled_from([1.0] * 6 + [1e-30, 1e-3, 1e3, 1e30, 1e300]))
    if kind == "noise":
        values = rng.poisson(draw(st.sampled_from([0.1, 3.0, 10.0, 1000.0])), shape).astype(np.float64) * scale
    elif kind == "spots":
        values = _spots(shape, rng, draw(st.sampled_from([5.0, 50.0, 5000.0]))) * scale
    elif kind == "constant":
        values = np.full(shape, draw(st.sampled_from([0.0, 1.0, -1.0, 0.5, 255.0, 65535.0, 1e38, 1e300])))
    elif kind == "ramp":
        values = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) * scale
    else:
        values = _spots(shape, rng, 50.0)
        if values.size:
            special = [np.nan, np.inf, -np.inf, 1e300, -1e38, 1e-310, 0.0]
            idx = rng.integers(0, values.size, draw(st.integers(1, 3)))
            values.flat[idx] = rng.choice(special, idx.size)
    if kind == "extremes" or dtype.kind in "iub":
        values = _extremes(values, dtype, rng) if kind == "extremes" else _cast(values, dtype)
    with np.errstate(all="ignore"):
        return values.astype(dtype)


def _spots(shape, rng, amplitude):
    """Gaussian spots on a background of 10 with Poisson noise (over the last three axes, repeated over others)."""
    zyx = shape[-3:] if len(shape) >= 3 else (1,) * (3 - len(shape)) + tuple(shape)
    grid = np.indices(zyx, dtype=np.float64)
    image = np.full(zyx, 10.0)
    for _ in range(rng.integers(0, 4)):
        centre = [rng.uniform(0, n) for n in zyx]
        r2 = sum(((g - c) / s) ** 2 for g, c, s in zip(grid, centre, (1.0, 1.5, 1.5)))
        image += amplitude * np.exp(-0.5 * r2)
    image = rng.poisson(image).astype(np.float64)
    return np.broadcast_to(image.reshape(shape[-3:] if len(shape) >= 3 else shape), shape).copy()


def _cast(values, dtype):
    if dtype.kind == "b":
        return values > np.nanmean(values) if values.size and np.isfinite(values).any() else values != 0
    info = np.iinfo(dtype)
    return np.clip(np.nan_to_num(values, nan=0.0, posinf=info.max, neginf=info.min), info.min, info.max)


def _extremes(values, dtype, rng):
    if dtype.kind == "b":
        pool = [False, True]
    elif dtype.kind == "f":
        f = np.finfo(dtype)
        pool = [float(f.max), float(f.min), float(f.tiny), 0.0]
    else:
        i = np.iinfo(dtype)
        pool = [i.max, i.min, 0]
    return rng.choice(np.asarray(pool, dtype=dtype), values.shape)


AXES = ("ZYX", "TZYX", "CZYX", "ZCYX", "TZCYX", "TCZYX", "QYX", "YX", "TYX", "CYX", "X", "ZYXS", "IYX", "QQYX")


@st.composite
def stack_files(draw, folder: Path) -> list[Path]:
    """The stack in one of many formats (maybe damaged) and, sometimes, a good stack after it in the batch."""
    data = draw(arrays())
    fmt = draw(st.sampled_from(["tiff"] * 3 + ["imagej"] * 2 + ["ome", "pages", "zlib", "bigtiff", "zarr",
                                                                 "ome-zarr", "garbage", "empty"]))
    axes = draw(st.sampled_from([None] * 8 + [a for a in AXES if len(a) == data.ndim]))
    path = folder / ("stack.zarr" if fmt.endswith("zarr") else "stack.tif")
    with np.errstate(all="ignore"):
        last = np.atleast_2d(data).astype(np.uint8)
    for attempt in ((data, fmt, axes), (data, "tiff", None), (last, "tiff", None)):
        try:
            _write(path, *attempt)  # some combinations the writer itself refuses (e.g. ImageJ int64, 1D TIFF)
            break
        except Exception:
            _remove(path)
    damage = draw(st.sampled_from([None] * 6 + ["truncate", "flip"]))
    if damage:
        _damage(path, damage, draw(st.floats(0.0, 1.0)), draw(st.integers(0, 2**16)))
    paths = [path]
    if draw(st.integers(0, 3)) == 3:
        good = folder / "good.tif"
        tifffile.imwrite(good, _spots((6, 32, 32), np.random.default_rng(1), 50.0).astype(np.uint16))
        paths.append(good)
    return paths


def _write(path: Path, data: np.ndarray, fmt: str, axes: str | None) -> None:
    meta = {"axes": axes} if axes else None
    if fmt == "tiff":
        tifffile.imwrite(path, data, photometric="minisblack", metadata=meta)
    elif fmt == "imagej":
        tifffile.imwrite(path, data, imagej=True, metadata=meta or {})
    elif fmt == "ome":
        tifffile.imwrite(path, data, ome=True, photometric="minisblack", metadata=meta)
    elif fmt == "bigtiff":
        tifffile.imwrite(path, data, bigtiff=True, photometric="minisblack", metadata=meta)
    elif fmt == "zlib":
        tifffile.imwrite(path, data, compression="zlib", photometric="minisblack", metadata=meta)
    elif fmt == "pages":
        with tifffile.TiffWriter(path) as tif:
            for plane in data.reshape(-1, *data.shape[-2:]) if data.ndim >= 2 else [data[None]]:
                tif.write(plane, photometric="minisblack", metadata=None)
    elif fmt == "garbage":
        path.write_bytes(b"II*\x00" + np.random.default_rng(data.size).bytes(min(data.nbytes, 4096)))
    elif fmt == "empty":
        path.write_bytes(b"")
    else:
        _write_zarr(path, data, fmt, axes)


def _write_zarr(path: Path, data: np.ndarray, fmt: str, axes: str | None) -> None:
    zarr = pytest.importorskip("zarr")
    chunks = tuple(max(1, n // 2) for n in data.shape)
    if fmt == "zarr":
        zarr.open_array(str(path), mode="w", shape=data.shape, dtype=data.dtype, chunks=chunks)[...] = data
        return
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=chunks)[...] = data
    names = list((axes or "tczyx"[5 - data.ndim:] if data.ndim <= 5 else "").lower())
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n} for n in names], "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0.5] * data.ndim}]}]}]


def _damage(path: Path, how: str, where: float, key: int) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    rng = np.random.default_rng(key)
    target = files[int(rng.integers(len(files)))] if files else None
    if target is None or not target.stat().st_size:
        return
    raw = bytearray(target.read_bytes())
    if how == "truncate":
        del raw[int(where * len(raw)):]
    else:
        for i in rng.integers(0, len(raw), 1 + int(where * 8)):
            raw[i] ^= 1 << int(rng.integers(8))
    target.write_bytes(bytes(raw))


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# ---------------------------------------------------------------------------------------- options and model

#: Option values that should work (first list) and that should be refused or are odd (second list).
OPTIONS = {
    "--threshold": (["auto", "0", "0.5", "0.999999", "1e-300"], ["1", "-0.1", "nan", "inf", "x"]),
    "--min-distance": (["1", "1,2,2", "0,0,0", "1e-9,1,1", "1e9"], ["0", "-1", "nan", "inf", "1,2", "a"]),
    "--tile": (["2,8,8", "4,16,16", "8,48,48", "100,100,100", "99999999999,1,1"],
               ["0,1,1", "1", "a,b,c", "3,-1,4", "1,2,3,4"]),
    "--voxel-size": (["0.3,0.1,0.1", "1", "1e-300,1,1", "1e6,1,1"], ["0", "nan", "inf", "1e308,1,1", "-1,1,1",
                                                                    "1,2"]),
    "--spot-size": (["auto", "off", "1.7,1.9", "0.6,0.2um", "fwhm=1.4,0.45um", "3,4", "0.3,0.3", "1e9,1e9",
                     "1e-9,1e-9um"], ["0,0", "nan,1", "-1,2", "x", "1.7"]),
    "--refine": (["lsq", "gaussian", "parabolic", "centroid", "none"], ["bad"]),
    "--tile-memory": (["0.05", "1", "1e6"], ["0", "nan"]),
    "--level": (["0", "1"], ["-1"]),
}
FLAGS = ["--no-mass-cut", "--no-split-pairs", "--mass-cut"]


@st.composite
def options(draw) -> list[str]:
    args: list[str] = []
    for name in draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=4, unique=True)):
        good, bad = OPTIONS[name]
        args += [name, draw(st.sampled_from(bad if draw(st.integers(0, 7)) == 7 else good))]
    args += draw(st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))
    if draw(st.integers(0, 5)) == 5:  # what the file's own metadata says is usually right: override it rarely
        args += ["--axes", draw(st.sampled_from([*AXES, "zyx", "ZZX", "ABC", "", "TZCYXS", "Z Y X", "1YX"]))]
    if draw(st.integers(0, 5)) == 5:
        args += ["--channel", draw(st.sampled_from(["0", "1", "2", "-1", "99", "x"]))]
    return args


#: Values each metadata key may take that pass the type checks yet are extreme (the model must still run, or be
#: refused in one line), then junk of any type for any key.
_VALID = {
    "dmdet.stride_zyx": ["[1, 1, 1]", "[1, 2, 2]", "[2, 8, 8]", "[3, 5, 7]", "[1, 64, 64]", "[1000, 1000, 1000]"],
    "dmdet.halo_zyx": ["[0, 0, 0]", "[1, 2, 2]", "[15, 36, 36]", "[100, 100, 100]", "[1000, 1000, 1000]"],
    "dmdet.threshold": ["0", "0.999999", "0.5", "1e-300"],
    "dmdet.sigma_zyx": ["null", "[1, 1.5, 1.5]", "[1e-9, 1e-9, 1e-9]", "[100, 100, 100]", "[0, 0, 0]"],
    "dmdet.min_distance_zyx": ["[0, 0, 0]", "[100, 100, 100]", "[1e-9, 1, 1]", "[1e300, 1, 1]"],
    "dmdet.normalisation": ['{"method": "median_mad"}', '{"method": "percentile", "low": 1, "high": 99.8}',
                            '{"method": "percentile", "low": 99, "high": 1}', '{"method": "percentile"}',
                            '{"method": "local_median_mad", "block": [1, 1, 1]}',
                            '{"method": "local_median_mad", "block": [1000, 1000, 1000]}'],
    "dmdet.kind": ['"binary"', '"density"'],
    "dmdet.voxel_size_um": ["null", "[0.3, 0.1, 0.1]", "[1e-300, 1, 1]", "[1e300, 1, 1]"],
    "dmdet.spot_sigma_zyx": ["null", "[1e-9, 1e-9, 1e-9]", "[100, 100, 100]", "[1, 1.5, 1.5]"],
    "dmdet.spot_sigma_range_zyx": ["null", "[[1e-9, 1e-9], [1e-9, 1e-9], [1e-9, 1e-9]]",
                                   "[[100, 200], [100, 200], [100, 200]]", "[[0.5, 3], [0.5, 3], [0.5, 3]]"],
    "dmdet.precision": ['"fp16"', '"fp32"'],
    "dmdet.format_version": ["0", "1", "-5"],
    "dmdet.config": ["{}", '{"width": 1e9}', '{"width": "x"}', '{"width": 0}', '{"width": -3}', '{"width": null}'],
    "dmdet.name": ['""', '"' + "x" * 5000 + '"', '"\\u00e9\\n\\t,;"'],
    "dmdet.noise_peaks": ["null"],
}
#: Type-preserving values for the entries of dmdet.noise_peaks (the calibration behind --threshold auto).
_NESTED_VALID = {
    "thresholds": ["[0.0]", "[0.999999]", "[0.1, 0.2]"], "per_voxel": ["[0.0]", "[1e300]", "[0.5, 0.5]"],
    "guard_sd": ["0", "-1", "1e9"], "stand_out_sd": ["0", "-1", "1e9"], "measure_level": ["0", "0.999", "-1", "5"],
    "structured_threshold": ["0.999", "-1", "2"], "photons": ["[]", "[0.0]", "[1e300]"], "volumes": ["0", "-1"],
    "per_voxel_models": ["[]", "[[0.0]]"], "per_voxel_cut_models": ["[]", "[[[0.0]]]"], "per_voxel_cut": ["[]"],
}
_JUNK = ["null", "[]", "[1, 2]", "[-1, 1, 1]", "[1.5, 1, 1]", '"x"', "0", "-1", "1", "NaN", "Infinity", "{}",
         "true", "1e308", "[[1, 2], [1, 2], [1, 2]]", "[[2, 1], [0, 1], [1, 1]]", "2", '[1, "x", 2]']
_NESTED_JUNK = ["null", "[]", "[0.5]", "[NaN, 1]", "-1", "0", "1e308", '"x"', "[[1]]", "{}", "2.5"]


@st.composite
def models(draw, folder: Path, test_model: Path) -> list[str]:
    """No --model (the shipped model), the test model, or a copy of either with one or two keys mutated: mostly
    to extreme values of the right type, sometimes to junk."""
    choice = draw(st.sampled_from(["test"] * 6 + ["shipped"] * 2 + ["mutated-test"] * 2 + ["mutated-shipped"] * 2 +
                                  ["not-onnx"]))
    if choice == "test":
        return ["--model", str(test_model)]
    if choice == "shipped":
        return []
    if choice == "not-onnx":
        bad = folder / "bad.onnx"
        bad.write_bytes(draw(st.sampled_from([b"", b"not onnx" * 40])))
        return ["--model", str(bad)]
    import onnx

    from dmdet_infer.model import default_model_path

    model = onnx.load(str(test_model if choice == "mutated-test" else default_model_path()))
    props = {p.key: p.value for p in model.metadata_props}
    for _ in range(draw(st.integers(1, 2))):
        key = draw(st.sampled_from(sorted(set(props) | set(_VALID))))
        action = draw(st.sampled_from(["valid"] * 4 + ["nested"] * 2 + ["junk", "delete"]))
        if action == "delete":
            props.pop(key, None)
        elif action == "nested" and props.get(key, "").startswith("{"):
            value = json.loads(props[key])
            inner = draw(st.sampled_from(sorted(set(value) | set(_NESTED_VALID if key == "dmdet.noise_peaks"
                                                                  else ["width"]))))
            pool = _NESTED_VALID.get(inner, []) if draw(st.integers(0, 3)) else _NESTED_JUNK
            value[inner] = json.loads(draw(st.sampled_from(pool or _NESTED_JUNK)))
            props[key] = json.dumps(value)
        else:
            pool = _VALID.get(key, []) if action == "valid" else _JUNK
            props[key] = draw(st.sampled_from(pool or _JUNK))
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    path = folder / "mutated.onnx"
    onnx.save(model, str(path))
    return ["--model", str(path)]


# ------------------------------------------------------------------------------------------------ the property


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


class _Logged(logging.Handler):
    """Log records that a real run would print (tifffile's go to its NullHandler and are not printed)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("tifffile"):
            self.lines.append(f"{record.name}: {record.getMessage()[:200]}")


class _Hang(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: int):
    def alarm(signum, frame):
        raise _Hang(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_in_process(args: list[str]) -> tuple[int, str, list[str]]:
    """(exit code, stderr, problems) of ``dmdet-infer args`` in this process: warnings a real run would print and
    log lines it would show count as problems, as does any exception that is not SystemExit."""
    logged = _Logged()
    logging.getLogger().addHandler(logged)
    try:
        with warnings.catch_warnings(record=True) as caught, _time_limit(CASE_SECONDS):
            warnings.simplefilter("always")
            result = CliRunner().invoke(main, args)
    finally:
        logging.getLogger().removeHandler(logged)
    problems = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught
                if not issubclass(w.category, HIDDEN_WARNINGS)] + logged.lines
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        problems.append("exception: " + "".join(traceback.format_exception(result.exception))[-3000:])
    return result.exit_code, result.stderr, problems


def run_in_subprocess(args: list[str]) -> tuple[int, str, list[str]]:
    proc = subprocess.run([sys.executable, "-m", "dmdet_infer.cli", *args], capture_output=True, text=True,
                          timeout=CASE_SECONDS)
    return proc.returncode, proc.stderr, []


def check_case(folder: Path, inputs: list[Path], args: list[str], runner) -> None:
    before = {p: _digest(p) for p in inputs}
    out = folder / "out"
    out.mkdir()
    target = ["-o", str(out / "spots.csv")] if len(inputs) == 1 else ["-o", str(out)]
    case = [*map(str, inputs), *target, *args, "-q"]
    code, stderr, problems = runner(case)
    if os.environ.get("DMDET_FUZZ_LOG"):  # one JSON line per case, for the record of a long run
        with open(os.environ["DMDET_FUZZ_LOG"], "a") as log:
            log.write(json.dumps({"args": case, "exit": code, "stderr": stderr[-500:],
                                  "problems": problems[:3]}) + "\n")
    hypothesis.event(f"exit {code}")
    if code == 2:  # what kind of refusal, for the statistics of a long run
        first = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        hypothesis.event("refused: " + " ".join(first.split(": ")[-1].split()[:3]))
    shown = f"\ncase: dmdet-infer {' '.join(case)}\nexit {code}\nstderr:\n{stderr}"
    assert not problems, "\n".join(problems) + shown
    assert "Traceback" not in stderr and "internal error" not in stderr, shown
    lines = [line for line in stderr.splitlines() if not line.startswith("dmdet-infer: warning: ")]
    assert len(stderr.splitlines()) - len(lines) <= 1, shown  # one warning at most (--tile)
    if code == 0:
        assert lines == [], shown
    else:  # one line: a bad option or model, or the one bad input; in a batch, one line per bad input
        assert code == 2, shown
        assert lines and all(line.startswith("dmdet-infer: error: ") for line in lines), shown
        if len(lines) > 1:
            named = [[str(p) in line for p in inputs] for line in lines]
            assert len(lines) <= len(inputs) and all(sum(n) == 1 for n in named), shown
            assert len({n.index(True) for n in named}) == len(lines), shown
    for csv in out.rglob("*.csv"):
        _valid_csv(csv, shown)
    if code == 0:
        written = {p.name for p in out.iterdir()}
        assert written == ({"spots.csv"} if len(inputs) == 1 else {"stack.csv", "good.csv"}), shown
    assert not [p for p in folder.rglob("*.tmp")], shown
    for p in inputs:
        assert _digest(p) == before[p], f"input {p} changed" + shown


#: Columns that are never NaN or infinite; extra per-spot features (mass, spread...) are NaN where not measured.
FINITE_COLUMNS = ("frame", "z", "y", "x", "score", "intensity", "z_um", "y_um", "x_um")


def _valid_csv(path: Path, shown: str) -> None:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    first = header[1:6] if header[0] == "frame" else header[:5]
    assert first == ["z", "y", "x", "score", "intensity"], shown
    finite = [i for i, name in enumerate(header) if name in FINITE_COLUMNS]
    for line in lines[1:]:
        values = [float(v) for v in line.split(",")]
        assert len(values) == len(header) and all(np.isfinite([values[i] for i in finite])), (line, shown)
        assert not any(np.isinf(values)), (line, shown)


# ------------------------------------------------------------------------------------------------ the tests


@pytest.fixture(scope="module")
def test_model(tmp_path_factory) -> Path:
    from onnx_models import smoothing_model

    path = tmp_path_factory.mktemp("fuzz-model") / "pooled.onnx"
    smoothing_model(path, pool=True)
    return path


@fuzz(EXAMPLES)
@given(data=st.data())
def test_any_input_options_and_model_exit_0_with_a_table_or_2_with_one_line(tmp_path_factory, test_model, data):
    folder = tmp_path_factory.mktemp("case")
    inputs = data.draw(stack_files(folder), label="inputs")
    model = data.draw(models(folder, test_model), label="model")
    args = data.draw(options(), label="options")
    if model != ["--model", str(test_model)] and "--tile" in args and args[args.index("--tile") + 1] == "2,8,8":
        args[args.index("--tile") + 1] = "4,16,16"  # wide halos make this minutes long: warned about, not a hang
    args += model
    check_case(folder, inputs, args, run_in_process)


@fuzz(max(2, EXAMPLES // 20))
@given(data=st.data())
def test_the_same_in_a_real_process(tmp_path_factory, test_model, data):
    """A few cases as users run them: real stderr (warnings, logging's last resort), real exit codes."""
    folder = tmp_path_factory.mktemp("case")
    inputs = data.draw(stack_files(folder), label="inputs")
    args = data.draw(options(), label="options") + ["--model", str(test_model)]
    check_case(folder, inputs, args, run_in_subprocess)
