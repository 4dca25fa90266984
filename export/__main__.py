"""``python -m export CHECKPOINT -o model.onnx [--opset 18] [--name NAME]``."""

from __future__ import annotations

import json
import sys

import click


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file to write")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--name", default=None, help="model name stored in the metadata (default: the config's name)")
@click.option("--threshold", type=float, default=None, help="override the tuned threshold")
@click.option("--dynamo", is_flag=True, help="use the dynamo exporter instead of the TorchScript one")
@click.option("--calibration-shape", default="10,512,512", show_default=True, metavar="Z,Y,X",
              help="background-only volumes (2, Poisson) on which the noise peaks behind --threshold auto are counted")
@click.option("--calibration-volumes", type=click.IntRange(min=1), default=None, metavar="N",
              help="volumes per noise model in the calibration (default: 8 for a noise-family calibration, else 2); "
                   "more volumes bound the rare high-scoring noise peaks more tightly")
@click.option("--calibration/--no-calibration", "calibration", default=None,
              help="add (or skip) the noise calibration behind --threshold auto, which then becomes the model's "
                   "default threshold; default: added, except for a checkpoint fine-tuned on annotated stacks "
                   "(data.source 'annotations'), whose default stays the threshold tuned on its validation stacks")
@click.option("--calibration-from", type=click.Path(exists=True, dir_okay=False), default=None,
              help="copy the noise calibration of this exported model of the same network instead of calibrating")
@click.option("--fp16", is_flag=True, help="half-precision network with float32 input/output (dmdet.precision fp16)")
def main(checkpoint: str, output: str, opset: int, name: str | None, threshold: float | None, dynamo: bool,
         calibration_shape: str, calibration_volumes: int | None, calibration: bool | None,
         calibration_from: str | None, fp16: bool) -> None:
    """Export a training checkpoint to ONNX (with dmdet metadata) and check parity with PyTorch."""
    from export.onnx_export import export_checkpoint

    try:
        shape = tuple(int(v) for v in calibration_shape.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise click.BadParameter(f"expected Z,Y,X positive integers, got {calibration_shape!r}",
                                 param_hint="--calibration-shape")
    report = export_checkpoint(checkpoint, output, opset=opset, name=name, threshold=threshold, dynamo=dynamo,
                               calibration_shape=shape, fp16=fp16, calibration_from=calibration_from,
                               calibration_volumes=calibration_volumes, calibrate=calibration)
    click.echo(json.dumps(report, indent=2, default=float))
    default = report["default_threshold"]
    click.echo("default threshold: " + ("auto (noise calibration)" if default == "auto"
                                        else f"{default:g} (tuned on the validation stacks; no noise calibration)"))
    click.echo(f"parity: max |onnxruntime - torch| = {report['parity_max_abs_diff']:.2e} on {report['parity_shape']}")


if __name__ == "__main__":
    sys.exit(main())
