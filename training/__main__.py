"""``python -m training train --config CONFIG --out RUN_DIR`` and ``python -m training evaluate CHECKPOINT``.

Both take the same split options for annotated stacks (``--train``/``--val``/``--test``, ``--counts``,
``--split-file``), so that a model is scored before and after fine-tuning on the same stacks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.group()
def main() -> None:
    """dmdet training tools."""


def split_options(command):
    """The options that define how annotated stacks are split, shared by ``train`` and ``evaluate``."""
    names = "comma-separated stack file names in the --data folder"
    for option in reversed((
        click.option("--train", "train_stacks", multiple=True, metavar="A.tif,B.tif",
                     help=f"training stacks ({names}); needs --val"),
        click.option("--val", "val_stacks", multiple=True, metavar="C.tif", help=f"validation stacks ({names})"),
        click.option("--test", "test_stacks", multiple=True, metavar="D.tif",
                     help=f"held-out stacks ({names}; default: every stack named in neither --train nor --val)"),
        click.option("--counts", default=None, metavar="N_TRAIN,N_VAL",
                     help="split by counts in name order: the first N_TRAIN stacks train, the next N_VAL validate, "
                          "the rest are held out"),
        click.option("--split-file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help='JSON {"train": [...], "val": [...], "test": [...]} of stack names (test optional), e.g. '
                          "the split.json a training run writes"),
    )):
        command = option(command)
    return command


def _names(values: tuple[str, ...]) -> list[str]:
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def _split_overrides(train_stacks: tuple[str, ...], val_stacks: tuple[str, ...], test_stacks: tuple[str, ...],
                     counts: str | None, split_file: str | None) -> dict:
    """The data spec keys a split given on the command line sets ({} when none is given)."""
    given = [name for name, v in (("--train/--val/--test", train_stacks or val_stacks or test_stacks),
                                  ("--counts", counts), ("--split-file", split_file)) if v]
    if len(given) > 1:
        raise click.UsageError(f"give one split definition, not {' and '.join(given)}")
    if counts is not None:
        try:
            pair = tuple(int(v) for v in counts.split(","))
        except ValueError:
            pair = ()
        if len(pair) != 2 or min(pair) < 0:
            raise click.BadParameter(f"expected N_TRAIN,N_VAL (two non-negative integers), got {counts!r}",
                                     param_hint="--counts")
        return {"split_counts": pair, "split_stacks": None}
    if split_file is not None:
        try:
            values = json.loads(Path(split_file).read_text())
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"{split_file} is not JSON ({exc.msg})", param_hint="--split-file") from None
        if not isinstance(values, dict):
            raise click.BadParameter(f"{split_file} must hold a JSON object with train, val (and test) lists",
                                     param_hint="--split-file")
        stacks = {k: values[k] for k in ("train", "val", "test") if k in values}
    elif train_stacks or val_stacks or test_stacks:
        stacks = {k: _names(v) for k, v in (("train", train_stacks), ("val", val_stacks), ("test", test_stacks))
                  if v}
    else:
        return {}
    from training.config import check_split_stacks

    try:
        return {"split_stacks": check_split_stacks(stacks), "split_counts": None}
    except ValueError as exc:
        raise click.UsageError(str(exc).replace("config data.split_stacks", "the split")) from None


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="run directory (resumed if it exists)")
@click.option("--restart", is_flag=True, help="ignore out/last.pt and start from scratch")
@click.option("--max-steps", type=int, default=None, help="override the config's max_steps")
@click.option("--max-minutes", type=float, default=None, help="override the config's max_minutes")
@click.option("--threads", type=int, default=None, help="torch threads (default: all cores)")
@click.option("--init-from", type=click.Path(exists=True, dir_okay=False), default=None,
              help="start from this checkpoint's weights (fine-tuning), overriding the config's init_from")
@click.option("--data", "data_folder", type=click.Path(exists=True, file_okay=False), default=None,
              help="train on the stack.tif + stack.csv pairs in this folder (data.source 'annotations')")
@click.option("--no-final-tuning", is_flag=True,
              help="skip the final threshold tuning on the validation split (compare runs by their validation log)")
@click.option("--set", "settings", multiple=True, metavar="KEY=JSON",
              help="override one config value, e.g. --set lr=2e-4 --set norm='\"frozen\"' --set data.n_stacks=40")
@split_options
def train(config_path: str, out: str, restart: bool, max_steps: int | None, max_minutes: float | None,
          threads: int | None, init_from: str | None, data_folder: str | None, no_final_tuning: bool,
          settings: tuple[str, ...], train_stacks: tuple[str, ...], val_stacks: tuple[str, ...],
          test_stacks: tuple[str, ...], counts: str | None, split_file: str | None) -> None:
    """Train a network from a JSON config; resumes from OUT/last.pt when it exists.

    With --data, the annotated stacks are split as the config says (training/configs/finetune.json: halves and
    quarters in name order) unless --train/--val[/--test], --counts or --split-file define the split.
    """
    from training.config import TrainConfig
    from training.train import train as run

    cfg = _with_settings(TrainConfig.load(config_path), settings)
    split = _split_overrides(train_stacks, val_stacks, test_stacks, counts, split_file)
    if max_steps is not None:
        cfg.max_steps = max_steps
    if max_minutes is not None:
        cfg.max_minutes = max_minutes
    if threads is not None:
        cfg.threads = threads
    if init_from is not None:
        cfg.init_from = init_from
    if data_folder is not None:
        cfg.data.source, cfg.data.folder, cfg.data.online = "annotations", data_folder, False
    if split:
        values = cfg.to_dict()
        values["data"].update(split)
        try:
            cfg = TrainConfig.from_dict(values)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    run(cfg, Path(out), restart=restart, final_tuning=not no_final_tuning)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--workers", type=int, default=None, help="processes (default: one per core, at most 16)")
@click.option("--set", "settings", multiple=True, metavar="KEY=JSON", help="override one config value")
def pool(config_path: str, workers: int | None, settings: tuple[str, ...]) -> None:
    """Simulate a config's data pool into its data.cache_dir, so that runs sharing it skip simulating."""
    from training.config import TrainConfig
    from training.data import fill_cache
    from training.train import default_workers

    cfg = _with_settings(TrainConfig.load(config_path), settings)
    n = fill_cache(cfg.data, workers or default_workers(), progress=True)
    click.echo(f"{n} stacks in {cfg.data.cache_dir}")


def _with_settings(cfg, settings: tuple[str, ...]):
    """Apply ``KEY=JSON`` overrides (``data.KEY`` for the data spec); values are JSON, bare words are strings."""
    from training.config import TrainConfig

    values = cfg.to_dict()
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = values
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.get(p) if isinstance(target.get(p), dict) else None
            if target is None:
                raise click.BadParameter(f"unknown config key {key!r}", param_hint="--set")
        if leaf not in target:
            raise click.BadParameter(f"unknown config key {key!r}", param_hint="--set")
        target[leaf] = value
    try:
        return TrainConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--set") from exc


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test")
@click.option("--norm", type=click.Choice(["running", "instance"]), default="running",
              help="normalisation statistics in eval mode (running = what the exported model does)")
@click.option("--threshold", default=None,
              help="a fixed cut in [0, 1) or 'auto'; default: the model's (auto for an exported model with a noise "
                   "calibration, else its tuned threshold)")
@click.option("--n-stacks", type=int, default=None, help="override data.n_stacks")
@click.option("--shape", default=None, help="override data.shape, e.g. 10,512,512")
@click.option("--data", "data_folder", type=click.Path(exists=True, file_okay=False), default=None,
              help="score on the stack.tif + stack.csv pairs in this folder instead of the checkpoint's data, "
                   "split as the split options say, else as the checkpoint's training split them when it was "
                   "trained on annotated stacks, else as training/configs/finetune.json splits them")
@click.option("--data-of", "data_of", type=click.Path(exists=True), default=None, metavar="RUN",
              help="score on the data of this training run (run directory, checkpoint, config or exported model): "
                   "its stacks, split as it split them; e.g. the shipped model on a fine-tuning run's test stacks")
@split_options
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None, metavar="FILE",
              help="detection options as dmdet-infer --config takes them (JSON; its model is not used); "
                   "--threshold overrides its threshold")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="write the scores as JSON")
def evaluate(checkpoint: str, split: str, norm: str, threshold: str | None, n_stacks: int | None,
             shape: str | None, data_folder: str | None, data_of: str | None, train_stacks: tuple[str, ...],
             val_stacks: tuple[str, ...], test_stacks: tuple[str, ...], counts: str | None, split_file: str | None,
             config_file: str | None, output: str | None) -> None:
    """Score a checkpoint or an exported .onnx model on a split of its data, through dmdet-infer's pipeline."""
    from dmdet_infer.config import DetectorConfig
    from dmdet_infer.errors import InputError
    from training.train import evaluate as run
    from training.train import run_data

    try:
        config = DetectorConfig.from_file(config_file) if config_file else None
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None

    overrides: dict = _split_overrides(train_stacks, val_stacks, test_stacks, counts, split_file)
    if data_of is not None:
        if data_folder is not None or overrides:
            raise click.UsageError("--data-of takes the run's stacks and split: give no --data or split option")
        try:
            overrides = run_data(data_of)
        except (ValueError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint="--data-of") from None
    if n_stacks is not None:
        overrides["n_stacks"] = n_stacks
    if shape is not None:
        overrides["shape"] = tuple(int(v) for v in shape.split(","))
    if data_folder is not None:
        overrides.update(source="annotations", folder=data_folder, online=False)
    from export.onnx_export import _json_safe

    try:
        cut: float | str | None = threshold if threshold in (None, "auto") else float(threshold)
        result = _json_safe(run(checkpoint, split, norm, cut, overrides, config))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    text = json.dumps(result, indent=2)
    if output:
        Path(output).write_text(text + "\n")
    click.echo(text)


if __name__ == "__main__":
    sys.exit(main())
