"""``dmdet-infer``: 3D stacks in, spot tables (CSV) out."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import DmdetError, InputError

EXAMPLES = """
\b
Examples:
  dmdet-infer stack.tif -o spots.csv
  dmdet-infer data/*.tif -o results/          # one CSV per stack: results/<stem>.csv
  dmdet-infer movie.tif -o tracks_in.csv --channel 1 --voxel-size 0.3,0.1,0.1
  dmdet-infer stack.tif -o spots.csv --threshold 0.3 --min-distance 1,2,2 --device cuda
"""


def _versions(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    import numba
    import onnxruntime

    from .model import working_providers

    click.echo(f"dmdet-infer {__version__} (onnxruntime {onnxruntime.__version__}, numba {numba.__version__}, "
               f"python {sys.version.split()[0]})")
    click.echo("working providers: " + ", ".join(working_providers()))
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


def output_stem(path: Path) -> str:
    """``stack.ome.tif`` -> ``stack``."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _outputs(inputs: list[Path], output: str | None) -> list[Path]:
    if output is None:
        return [p.with_name(output_stem(p) + ".csv") for p in inputs]
    out = Path(output)
    if len(inputs) > 1 or out.is_dir() or output.endswith(("/", os.sep)):
        if not out.is_dir():
            try:
                out.mkdir(parents=True)
            except OSError as exc:
                raise InputError(f"{out}: cannot create output folder ({exc.strerror})") from None
        targets = [out / (output_stem(p) + ".csv") for p in inputs]
        if len(set(targets)) != len(targets):
            raise InputError(f"{out}: several inputs share a file name; their CSVs would overwrite each other")
        return targets
    return [out]


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True, metavar="STACK...")
@click.option("-o", "--output", metavar="PATH",
              help="CSV file for one input, or a folder for several (DIR/<stem>.csv). Default: <stem>.csv beside "
                   "each input.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), metavar="MODEL.onnx",
              help="Exported dmdet model. Default: the model shipped with dmdet.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto uses CUDA when onnxruntime-gpu really works here, else the CPU.")
@click.option("--threshold", type=float, metavar="T",
              help="Minimum density-map value of a spot, in [0,1). Default: the model's tuned value. "
                   "Example: --threshold 0.3")
@click.option("--min-distance", metavar="Z,Y,X",
              help="Smallest distance between two spots in voxels (one value or Z,Y,X). Example: 1,2,2")
@click.option("--voxel-size", metavar="Z,Y,X",
              help="Voxel size in µm, adds z_um,y_um,x_um columns. Default: from the file. Example: 0.3,0.1,0.1")
@click.option("--channel", type=int, metavar="C", help="Channel index (0-based) of a multi-channel file.")
@click.option("--axes", metavar="AXES", help="Axes of the file when its metadata is wrong or missing, e.g. TZYX.")
@click.option("--tile", metavar="Z,Y,X",
              help="Largest block sent to the network at once. Default: automatic. Example: 10,256,256")
@click.option("--refine", type=click.Choice(["gaussian", "lsq", "parabolic", "centroid", "none"]), default="gaussian",
              show_default=True,
              help="Sub-voxel refinement of each peak: per-axis log-Gaussian 3-point (gaussian), log-quadratic "
                   "least squares over 3x3x3 (lsq, more robust on noisy or wide maps), parabolic, "
                   "intensity-weighted centroid, or none (integer voxels).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary; errors only.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_versions,
              help="Show dmdet, onnxruntime and numba versions and the providers that really work, then exit.")
def main(inputs, output, model_path, device, threshold, min_distance, voxel_size, channel, axes, tile, refine, quiet):
    """Find fluorescent particles in 3D stacks (TIFF, OME-TIFF, ImageJ hyperstacks) and write one spot table
    (z,y,x,score,intensity in voxels; frame for time-lapses; z_um,y_um,x_um when the voxel size is known) per
    stack."""
    try:
        code = _run(inputs, output, model_path, device, threshold, min_distance, voxel_size, channel, axes, tile,
                    refine, quiet)
    except DmdetError as exc:
        _error(exc)
        code = exc.exit_code
    sys.exit(code)


def _error(exc: BaseException) -> None:
    click.echo(f"dmdet-infer: error: {exc}", err=True)


def _run(inputs, output, model_path, device, threshold, min_distance, voxel_size, channel, axes, tile, refine,
         quiet) -> int:
    from .detector import Detector
    from .io import input_paths, read_stack

    min_distance = _triple(min_distance, "--min-distance")
    voxel_size = _triple(voxel_size, "--voxel-size")
    tile = _triple(tile, "--tile", int)
    paths = input_paths(list(inputs))
    targets = _outputs(paths, output)
    detector = Detector(model_path, device=device, threshold=threshold, min_distance=min_distance, refine=refine,
                        tile=tile)
    code = 0
    several = len(paths) > 1
    with _progress(len(paths), "stacks", quiet or not several) as bar:
        for path, target in zip(paths, targets):
            try:
                stack = read_stack(path, channel=channel, axes=axes)
                if voxel_size is not None:
                    stack = dataclasses.replace(stack, voxel_size_um=voxel_size)
                frames = stack.data.shape[0]
                with _progress(frames, f"{path.name} frames", quiet or frames < 2) as frame_bar:
                    spots = detector.detect_stack(stack, progress=frame_bar)
                spots.to_csv(target)
            except DmdetError as exc:
                _error(exc)
                code = max(code, exc.exit_code)
            except Exception as exc:  # keep going past one broken file; report it in one line
                if os.environ.get("DMDET_DEBUG"):
                    raise
                _error(InputError(f"{path}: internal error {type(exc).__name__}: {exc}"))
                code = max(code, 1)
            else:
                if not quiet:
                    click.echo(f"{path}: {len(spots)} spots -> {target}")
            bar.update(1)
    return code


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
