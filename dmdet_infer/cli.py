"""``dmdet-infer``: 3D stacks in, spot tables (CSV) out."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path

import click
import numpy as np

from . import __version__
from .config import DetectorConfig
from .errors import DmdetError, InputError, where

EXAMPLES = """
\b
Examples:
  dmdet-infer stack.tif -o spots.csv
  dmdet-infer data/*.tif -o results/          # one CSV per stack: results/<stem>.csv
  dmdet-infer movie.tif -o tracks_in.csv --channel 1 --voxel-size 0.3,0.1,0.1
  dmdet-infer stack.tif -o spots.csv --threshold 0.3 --min-distance 1,2,2 --device cuda
  dmdet-infer image.ome.zarr -o spots.csv --level 0 --channel 1   # OME-Zarr (pip install 'dmdet[zarr]')
  dmdet-infer huge.tif -o spots.csv --workers 8         # local dask cluster (pip install 'dmdet[dask]')
  dmdet-infer huge.zarr -o spots.csv --scheduler tcp://10.0.0.5:8786
"""


#: The detection options that are flags: :class:`DetectorConfig`'s fields with ``cli`` metadata, in field order.
CONFIG_OPTIONS = {f.name: f.metadata["cli"] for f in dataclasses.fields(DetectorConfig) if "cli" in f.metadata}
#: The Python API's errors name its parameters; the one line the CLI prints names the flag the user typed.
FLAGS = {
    **{name: cli["flag"].split("/")[0] for name, cli in CONFIG_OPTIONS.items()},
    "voxel_size_um": "--voxel-size", "channel": "--channel", "axes": "--axes", "level": "--level",
    "scheduler": "--scheduler", "workers": "--workers",
}
_NAMES = "|".join(sorted(FLAGS, key=len, reverse=True))
#: Where an API message names a parameter: as a keyword anywhere (``use channel=0``, ``axes='ZYX'``, ``pass
#: tile=``), or as the subject of a clause (``threshold must ...``, ``tile needs ...``) at the start of the message
#: or after ": " or "; ". Plain words ("1 channel", "axes ZYX", "the model") and paths are left alone.
_PARAMETER = re.compile(rf"(?<![\w.-])(?P<keyword>{_NAMES})=(?:'(?P<value>[^'\s]+)')?"
                        rf"|(?:^|(?<=: )|(?<=; ))(?P<subject>{_NAMES})(?= (?:must|needs) )")


def flag_names(message: str) -> str:
    """An API error message in the CLI's words: ``threshold must be ...`` -> ``--threshold must be ...``,
    ``use channel=0`` -> ``use --channel 0``, ``axes='ZYX'`` -> ``--axes ZYX``, ``pass tile=`` -> ``pass --tile``."""

    def flag(m: re.Match[str]) -> str:
        if m["subject"]:
            return FLAGS[m["subject"]]
        name = FLAGS[m["keyword"]]
        if m["value"] is not None:
            return f"{name} {m['value']}"
        follows = message[m.end():m.end() + 1]
        return name if follows in ("", " ", ",", ";", ")") else name + " "

    return _PARAMETER.sub(flag, message)


def _versions(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import numba
    import onnxruntime

    from .model import auto_precision, openvino_installed, openvino_version, working_providers

    click.echo(f"dmdet-infer {__version__} (onnxruntime {onnxruntime.__version__}, numba {numba.__version__}, "
               f"python {sys.version.split()[0]})")
    click.echo("working providers: " + ", ".join(working_providers()))
    openvino = openvino_version()
    if openvino:
        arithmetic = {"bf16": "bf16 (this CPU has it natively)", "fp32": "fp32 (this CPU has no native bf16)"}[
            auto_precision()]
        click.echo(f"openvino {openvino}: runs the network on the CPU (--runtime auto), in {arithmetic} "
                   "(--precision auto)")
    elif openvino_installed():
        click.echo("openvino: installed but not importable; ONNX Runtime runs the network")
    else:
        click.echo('openvino: not installed (pip install "dmdet[openvino]" runs the network about 2x faster on a CPU)')
    ctx.exit(0)


def _triple(text: str | None, name: str, cast=float) -> tuple | None:
    if text is None:
        return None
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        values = tuple(cast(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"expected numbers like 1,2,2, got {text!r}", param_hint=name) from None
    if len(values) == 1 and name != "--tile":
        values = values * 3
    if len(values) != 3 or any(v <= 0 for v in values):
        raise click.BadParameter(f"expected three positive values Z,Y,X, got {text!r}", param_hint=name)
    return values


def _config_option(name: str, cli: dict):
    """The ``click.option`` of the :class:`DetectorConfig` field ``name`` from its ``cli`` metadata (see
    :func:`dmdet_infer.config._cli`): the flag, its help and how the text becomes the field's value."""
    flag, kind = cli["flag"], cli["kind"]
    extra = {k: v for k, v in cli.items() if k not in ("flag", "help", "kind", "choices")}
    default = DetectorConfig.__dataclass_fields__[name].default
    if kind in ("choice", "bool", "spot_size"):
        extra["default"] = default
    if kind == "choice":
        extra["type"] = click.Choice(list(cli["choices"]))
    elif kind == "path":
        extra["type"] = click.Path(dir_okay=False)
    elif kind == "gib":
        extra["type"] = click.FloatRange(min=0.05, max=1e6)
        extra["callback"] = lambda ctx, param, value: None if value is None else value * 2**30
    elif kind == "threshold":
        extra["callback"] = lambda ctx, param, value: _threshold(value)
    elif kind in ("triple", "int_triple"):
        cast = int if kind == "int_triple" else float
        extra["callback"] = lambda ctx, param, value: _triple(value, flag, cast)
    return click.option(flag, name, help=cli["help"], **extra)


def _config_options(command):
    """Decorate ``command`` with a flag per detection option (:data:`CONFIG_OPTIONS`), in field order."""
    for name, cli in reversed(CONFIG_OPTIONS.items()):
        command = _config_option(name, cli)(command)
    return command


def _config(ctx: click.Context, config_file: str | None) -> DetectorConfig:
    """The one :class:`DetectorConfig` of this run: ``--config`` (or the defaults) with the flags given."""
    base = DetectorConfig() if config_file is None else DetectorConfig.from_file(config_file)
    typed = {click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT}
    given = {name: ctx.params[name] for name in CONFIG_OPTIONS
             if config_file is None or ctx.get_parameter_source(name) in typed}
    return base.replace(**given)


def _voxel_size(text: str | None) -> tuple[float, float, float] | None:
    """``--voxel-size``: one value or three, positive and at most a metre (the µm columns must stay finite)."""
    from .io import _check_voxel_size

    return _check_voxel_size(_triple(text, "--voxel-size"), "--voxel-size")


def output_stem(path: Path) -> str:
    """``stack.ome.tif`` -> ``stack``."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _outputs(inputs: list[Path], output: str | None, suffix: str = ".csv", several: bool = False) -> list[Path]:
    """Output paths: beside each input, or in the folder ``output`` (several inputs or specs, an existing folder
    or a trailing slash), or the file ``output``."""
    if output is None:
        return [p.with_name(output_stem(p) + suffix) for p in inputs]
    out = Path(output)
    if several or len(inputs) > 1 or out.is_dir() or output.endswith(("/", os.sep)):
        if not out.is_dir():
            try:
                out.mkdir(parents=True)
            except OSError as exc:
                raise InputError(f"{out}: cannot create output folder ({exc.strerror})") from None
        targets = [out / (output_stem(p) + suffix) for p in inputs]
        if len(set(targets)) != len(targets):
            raise InputError(f"{out}: several inputs share a file name; their outputs would overwrite each other")
        return targets
    return [out]


class _OneLineErrors(click.Command):
    """Usage errors (a bad option value, an unknown option, no input) on one line like every other error,
    ``dmdet-infer: error: ...``, where click prints the usage, a hint, a blank line and the error."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            return super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            click.echo(f"dmdet-infer: error: {' '.join(exc.format_message().split())} (see dmdet-infer --help)",
                       err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"dmdet-infer: error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:  # Ctrl-C while the arguments are parsed
            click.echo("dmdet-infer: interrupted", err=True)
            sys.exit(130)


@click.command(cls=_OneLineErrors, epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True, metavar="STACK...")
@click.option("-o", "--output", metavar="PATH",
              help="CSV file for one input, or a folder for several (DIR/<stem>.csv). Default: <stem>.csv beside "
                   "each input.")
@_config_options
@click.option("--config", "config_file", type=click.Path(dir_okay=False), metavar="JSON",
              help="Detection options from a JSON file: an object of dmdet_infer.DetectorConfig's fields, e.g. "
                   "{\"threshold\": 0.4, \"split_pairs\": false}; the flags given override it.")
@click.option("--voxel-size", metavar="Z,Y,X",
              help="Voxel size in µm, adds z_um,y_um,x_um columns. Default: from the file. Example: 0.3,0.1,0.1")
@click.option("--channel", type=int, metavar="C", help="Channel index (0-based) of a multi-channel file.")
@click.option("--axes", metavar="AXES", help="Axes of the file when its metadata is wrong or missing, e.g. TZYX.")
@click.option("--level", type=click.IntRange(min=0), default=0, show_default=True,
              help="Resolution level of an OME-Zarr pyramid (0: full resolution).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run tiles and frames on this dask.distributed scheduler (e.g. tcp://host:8786); the workers "
                   "must see the input files.")
@click.option("--workers", type=click.IntRange(min=1), metavar="N",
              help="Run on a local dask cluster of N worker processes (one model session each).")
@click.option("--preview", metavar="PNG",
              help="Also write a picture to check the result: z max projection of the (first) frame with the "
                   "detected spots as magenta circles and --truth as green ones. A folder for several inputs "
                   "(DIR/<stem>.png). Example: --preview preview.png")
@click.option("--truth", type=click.Path(dir_okay=False), metavar="CSV",
              help="Known positions (CSV with z,y,x columns in voxels) drawn in green in the --preview.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary; errors only.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_versions,
              help="Show dmdet, onnxruntime and numba versions and the providers that really work, then exit.")
@click.pass_context
def main(ctx, inputs, output, config_file, voxel_size, channel, axes, level, scheduler, workers, preview, truth,
         quiet, **options):
    """Find fluorescent particles in 3D stacks (TIFF, OME-TIFF, ImageJ hyperstacks) and write one spot table
    (z,y,x,score,intensity in voxels; frame for time-lapses; z_um,y_um,x_um when the voxel size is known) per
    stack. Zarr / OME-Zarr stores are read lazily; --workers/--scheduler spread tiles and frames over a dask
    cluster."""
    reading = _Reading(voxel_size, channel, axes, level)
    try:
        with _interruptible():
            code = _main(ctx, inputs, output, config_file, reading, scheduler, workers, preview, truth, quiet)
    except KeyboardInterrupt:
        _interrupted()
    sys.exit(code)


@dataclasses.dataclass(frozen=True)
class _Reading:
    """How the inputs are read (not detection options): --voxel-size (text), --channel, --axes, --level."""

    voxel_size: str | None = None
    channel: int | None = None
    axes: str | None = None
    level: int = 0


def _main(ctx, inputs, output, config_file, reading: _Reading, scheduler, workers, preview, truth, quiet) -> int:
    try:
        config = _config(ctx, config_file)
        if scheduler or workers:
            if preview:
                raise InputError("--preview is not available with --scheduler/--workers; run without them")
            if config.spot_size not in ("auto", "off", None):
                raise InputError("--spot-size is not available with --scheduler/--workers (stacks are not "
                                 "resampled there); run without them")
            code = _run_distributed(inputs, output, config, reading, scheduler, workers, quiet)
        else:
            code = _run(inputs, output, config, reading, quiet, preview, truth)
    except DmdetError as exc:
        _error(exc)
        code = exc.exit_code
    except click.ClickException:  # a bad option value found while running: click's usage error, one line
        raise
    except Exception as exc:  # a bug: still one line, no traceback (DMDET_DEBUG=1 shows it)
        if os.environ.get("DMDET_DEBUG"):
            raise
        _error(f"internal error {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        code = 1
    return code


def _cancel_runs(timeout: float) -> bool:
    """Abort the network calls in progress (if the model module is loaded at all); True when none is left."""
    model = sys.modules.get("dmdet_infer.model")
    return True if model is None else model.cancel_runs(timeout)


def _on_sigint(signum, frame) -> None:
    _cancel_runs(0.0)  # every thread's network call stops at once, not only the one the main thread waits for
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interruptible():
    """Ctrl-C aborts the network calls in progress as it raises KeyboardInterrupt (main thread only)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield  # someone else (an embedding application, a test runner) decides what Ctrl-C does
        return
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _interrupted() -> None:
    """Ctrl-C: one line, exit 130. Outputs are atomic, so nothing half-written is left. A network call that does not
    stop within two seconds would make the interpreter's shutdown unsafe: then the process ends at once."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean-up
    logging.disable(logging.CRITICAL)  # dask and tifffile have nothing useful to add now
    stopped = _cancel_runs(2.0)
    click.echo("dmdet-infer: interrupted", err=True)
    if not stopped:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(130)


def _error(exc: BaseException | str) -> None:
    click.echo(f"dmdet-infer: error: {flag_names(str(exc))}", err=True)


def _input_paths(inputs) -> tuple[list[Path], list[InputError]]:
    """Stack files, folders and globs as ``io.input_paths`` expands them; Zarr stores as they are. A spec that
    names nothing readable (missing file, empty glob, FIFO) is an error of its own, so a batch goes on past it."""
    from .io import input_paths
    from .zarr_io import is_zarr

    paths: list[Path] = []
    errors: list[InputError] = []
    for spec in inputs:
        try:
            found = [Path(spec)] if is_zarr(spec) else input_paths([spec])
        except InputError as exc:
            errors.append(exc)
            continue
        paths.extend(p for p in found if p not in paths)
    return paths, errors


def _check_outputs(paths: list[Path], outputs: list[Path | None]) -> None:
    """Refuse, before any work, outputs that would destroy data or cannot be written: an output that is an input or
    another output, an existing path that is not a regular file (device node, FIFO, folder) or is a symbolic link,
    and a folder that does not exist or is not writable."""
    inputs = {os.path.realpath(p) for p in paths}
    seen: set[str] = set()
    for out in outputs:
        if out is None:
            continue
        real = os.path.realpath(out)
        if real in inputs:
            raise InputError(where(out, "the output would overwrite an input stack; choose another output path"))
        if real in seen:
            raise InputError(where(out, "two outputs (e.g. -o and --preview) name the same file"))
        seen.add(real)
        if out.is_symlink():
            raise InputError(where(out, "the output is a symbolic link; name the file itself"))
        if out.exists() and not out.is_file():
            raise InputError(where(out, "the output exists and is not a regular file (a device, FIFO or folder)"))
        parent = out.parent if str(out.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(where(out, f"the output folder {parent} does not exist"))
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(where(out, f"the output folder {parent} is not writable"))


def _threshold(value: str | None) -> float | str | None:
    """``--threshold``: None, 'auto' or a number (its range is checked by the Detector)."""
    if value is None:
        return None
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"expected a number in [0, 1) or 'auto', got {value!r}") from None


def _run_distributed(inputs, output, config: DetectorConfig, reading: _Reading, scheduler, workers, quiet) -> int:
    from .detector import Detector
    from .distributed import connect, detect_many, stop_runs

    voxel_size = _voxel_size(reading.voxel_size)
    channel, axes, level, tile = reading.channel, reading.axes, reading.level, config.tile
    paths, bad = _input_paths(inputs)
    targets = _outputs(paths, output, several=len(inputs) > 1)
    _check_outputs(paths, list(targets))
    for exc in bad:
        _error(exc)
    if not paths:
        return 2
    if config.model is not None:  # the workers may run elsewhere
        config = config.replace(model=str(Path(config.model).resolve()))
    if config.threads is None and not scheduler:
        config = config.replace(threads=max(1, (os.cpu_count() or 1) // workers))
    local = Detector(config=config)  # bad models fail here, in one line, before a cluster starts
    if tile is not None:
        from .zarr_io import read_input

        for path in paths:
            try:
                shape = read_input(path, channel=channel, axes=axes, level=level).data.shape[1:]
            except DmdetError:
                continue  # reported by the run, in its place
            if _warn_small_tile(local, shape, tile, path):
                break
    code = 2 if bad else 0
    with connect(scheduler, workers) as client:
        try:
            results = detect_many(client, [p.resolve() for p in paths], config, channel=channel, axes=axes,
                                  level=level, voxel_size_um=voxel_size)
        except KeyboardInterrupt:  # before the cluster closes: its logs say nothing useful now
            logging.disable(logging.CRITICAL)
            if not scheduler:  # local workers only: a shared cluster's other work is not ours to stop
                with contextlib.suppress(Exception):
                    client.run(stop_runs, True)
            raise
    for path, target, result in zip(paths, targets, results):
        try:
            if isinstance(result, DmdetError):
                raise result
            result.to_csv(target)
        except DmdetError as exc:
            _error(exc)
            code = max(code, exc.exit_code)
        else:
            if not quiet:
                click.echo(f"{path}: {len(result)} spots -> {target} ({describe(result.meta)})")
    return code


#: --tile makes the network process more than this many times the voxels of the automatic tile: a warning.
SMALL_TILE_FACTOR = 4.0


def _warn_small_tile(detector, shape: tuple[int, ...], tile: tuple[int, int, int], path: Path) -> bool:
    """Warn, on one line, when ``tile`` is so small next to the network's context (halo) and stride that the network
    would process far more voxels than with the automatic tile for this stack; True when it warned."""
    from .tiling import auto_tile, work

    info = detector.info
    shape = tuple(int(n) for n in shape)
    given = work(shape, tile, info.halo_zyx, info.stride_zyx)
    best = work(shape, auto_tile(shape, info.halo_zyx, info.stride_zyx, detector.max_tile_voxels), info.halo_zyx,
                info.stride_zyx)
    factor = given / max(best, 1)
    if factor <= SMALL_TILE_FACTOR:
        return False
    click.echo(f"dmdet-infer: warning: {path}: --tile {','.join(map(str, tile))} is small for this model, which "
               f"needs {','.join(map(str, info.halo_zyx))} voxels of context around each tile (stride "
               f"{','.join(map(str, info.stride_zyx))}): the network would process {factor:.0f}x the voxels of the "
               "automatic tile, about as much slower; leave --tile out or make it larger", err=True)
    return True


def describe(meta: dict) -> str:
    """The threshold a result used, for the per-file line: one volume's, or the range over a time-lapse's frames."""
    frames = meta.get("frames", [meta])
    nothing = sum(1 for m in frames if str(m.get("threshold_mode", "")).endswith("nothing stands out"))
    constant = sum(1 for m in frames if str(m.get("threshold_mode", "")).startswith("constant"))
    used = [m["threshold"] for m in frames if m.get("threshold") is not None]
    masses = [m["mass_cut"] for m in frames if m.get("mass_cut") is not None]
    mode = frames[0].get("threshold_mode", "") if frames else ""
    parts = []
    if used:
        lo, hi = min(used), max(used)
        parts.append(f"threshold {lo:.2f}" if lo == hi else f"threshold {lo:.2f}-{hi:.2f}")
        parts[-1] += " (auto)" if mode.startswith("auto") else ""
    if masses:
        parts.append(f"mass > {min(masses):.3g}" if min(masses) == max(masses) else
                     f"mass > {min(masses):.3g}-{max(masses):.3g}")
    if nothing:
        what = "nothing stands out of the noise"
        parts.append(what if len(frames) == 1 else f"{what} in {nothing} of {len(frames)} frames")
    if constant:
        parts.append("constant image" if len(frames) == 1 else f"{constant} constant frames")
    scales = [m["scale"] for m in frames if m.get("scale")]
    if scales:
        sizes = [s["sigma_zyx"] for s in scales if s.get("sigma_zyx")]
        resampled = [s["factors"] for s in scales if s.get("factors")]
        if sizes:
            z, xy = float(np.median([v[0] for v in sizes])), float(np.median([v[1] for v in sizes]))
            parts.append(f"spot sigma {z:.2g},{xy:.2g} vox ({scales[0]['source']})")
        if resampled:
            f = resampled[0]
            parts.append(f"resampled x{f[0]:.2g},{f[1]:.2g}" + (f" in {len(resampled)} frames" if len(frames) > 1
                                                              else ""))
    return "; ".join(parts) or mode


def _run(inputs, output, config: DetectorConfig, reading: _Reading, quiet, preview=None, truth=None) -> int:
    from .detector import Detector
    from .io import read_points
    from .scale import parse_spot_size
    from .zarr_io import read_input

    voxel_size = _voxel_size(reading.voxel_size)
    channel, axes, level, tile = reading.channel, reading.axes, reading.level, config.tile
    paths, bad = _input_paths(inputs)
    targets = _outputs(paths, output, several=len(inputs) > 1)
    pictures = _outputs(paths, preview, ".png", several=len(inputs) > 1) if preview else [None] * len(paths)
    _check_outputs(paths, [*targets, *pictures])
    for exc in bad:
        _error(exc)
    if not paths:
        return 2
    truth_zyx = read_points(truth) if truth else None
    if isinstance(config.spot_size, str) and config.spot_size not in ("auto", "off") and voxel_size is not None:
        try:  # in µm (checked per stack by the Detector): with --voxel-size, check it before any file is read
            parse_spot_size(config.spot_size, voxel_size)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    detector = Detector(config=config)
    code = 2 if bad else 0
    several = len(paths) > 1
    warned = False
    with _progress(len(paths), "stacks", quiet or not several) as bar:
        for path, target, picture in zip(paths, targets, pictures):
            try:
                stack = read_input(path, channel=channel, axes=axes, level=level)
                if voxel_size is not None:
                    stack = dataclasses.replace(stack, voxel_size_um=voxel_size)
                if tile is not None and not warned:
                    warned = _warn_small_tile(detector, stack.data.shape[1:], tile, path)
                tiles = detector.n_tiles(stack)
                with _progress(tiles, f"{path.name} tiles", quiet or tiles < 2) as tile_bar:
                    spots = detector.detect_stack(stack, progress=tile_bar)
                spots.to_csv(target)
                if picture is not None:
                    _write_preview(picture, stack, spots, truth_zyx)
            except DmdetError as exc:
                _error(exc if str(path) in str(exc) else type(exc)(where(path, str(exc))))  # name the file
                code = max(code, exc.exit_code)
            except Exception as exc:  # keep going past one broken file; report it in one line
                if os.environ.get("DMDET_DEBUG"):
                    raise
                _error(InputError(f"{path}: internal error {type(exc).__name__}: {exc}"))
                code = max(code, 1)
            else:
                if not quiet:
                    click.echo(f"{path}: {len(spots)} spots -> {target} ({describe(spots.meta)})")
            bar.update(1)
    return code


def _write_preview(picture: Path, stack, spots, truth_zyx) -> None:
    """z-MIP of the first frame with its spots (and the truth) circled."""
    from .preview import write_preview

    zyx = spots.zyx if spots.frame is None else spots.zyx[spots.frame == 0]
    write_preview(picture, stack.data[0], zyx, truth_zyx, title=str(stack.path))


class _NoBar:
    def update(self, n: int) -> None:
        pass


@contextlib.contextmanager
def _progress(total: int, label: str, hidden: bool):
    if hidden:
        yield _NoBar()
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar


if __name__ == "__main__":  # pragma: no cover
    main()
