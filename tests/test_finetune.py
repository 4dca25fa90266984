"""Fine-tuning as a user meets it: explicit splits of annotated stacks (by names or counts) shared by
``train`` and ``evaluate``, and a time budget that validates and saves before it stops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

import test_train  # noqa: E402  (tests/ is on the path: conftest.py)
from click.testing import CliRunner  # noqa: E402

from training.__main__ import main  # noqa: E402
from training.config import DataSpec, TrainConfig  # noqa: E402
from training.data import raw_split  # noqa: E402
from training.simulate import SimParams, simulate  # noqa: E402
from training.train import load_checkpoint, train  # noqa: E402

SMALL = DataSpec(n_stacks=4, shape=(10, 32, 32), snr=7.0, density="high")  # smaller than test_train's default


def tiny_config(**changes) -> TrainConfig:
    """test_train's tiny config on :data:`SMALL` stacks unless ``data`` is given."""
    return test_train.tiny_config(**{"data": SMALL, **changes})


def annotated_folder(folder: Path, n: int = 6, frames: dict[int, int] | None = None) -> Path:
    """``s0.tif`` .. ``s{n-1}.tif`` with their ``.csv``; stack k has ``frames[k]`` TZYX frames when given."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        t = (frames or {}).get(k, 0)
        vols, rows = [], []
        for f in range(max(t, 1)):
            vol, pos = simulate(SimParams(shape=(10, 32, 32), n_particles=4, snr=6.0),
                                np.random.default_rng(100 * k + f))
            vols.append(vol.astype(np.float32))
            rows += [[f, *p] for p in pos]
        if t:
            tifffile.imwrite(folder / f"s{k}.tif", np.stack(vols))
            np.savetxt(folder / f"s{k}.csv", np.array(rows), delimiter=",", header="frame,z,y,x", comments="")
        else:
            tifffile.imwrite(folder / f"s{k}.tif", vols[0])
            np.savetxt(folder / f"s{k}.csv", np.array(rows)[:, 1:], delimiter=",", header="z,y,x", comments="")
    return folder


def stacks(spec: DataSpec, split: str) -> list[str]:
    return [meta["stack"] for _, _, meta in raw_split(spec, split)]


def test_annotated_stacks_split_by_counts_names_or_fractions(tmp_path):
    folder = str(annotated_folder(tmp_path / "stacks", 5, frames={1: 2}))  # s1: a TZYX stack of 2 frames
    counts = DataSpec(source="annotations", folder=folder, split_counts=(3, 1))
    assert stacks(counts, "train") == ["s0.tif", "s1.tif", "s1.tif"]  # counts count items: s1's 2 frames
    assert stacks(counts, "val") == ["s2.tif"] and stacks(counts, "test") == ["s3.tif", "s4.tif"]
    named = DataSpec(source="annotations", folder=folder, split_stacks={"train": ["s4.tif", "s1"], "val": ["s2.tif"]})
    assert stacks(named, "train") == ["s1.tif", "s1.tif", "s4.tif"]  # name order; a stack's frames go together
    assert [m.get("frame") for _, _, m in raw_split(named, "train")] == [0, 1, None]
    assert stacks(named, "val") == ["s2.tif"]
    assert stacks(named, "test") == ["s0.tif", "s3.tif"]  # the rest
    fixed = DataSpec(source="annotations", folder=folder, split_stacks={"train": ["s0"], "val": ["s2"],
                                                                        "test": ["s3"]})
    assert stacks(fixed, "test") == ["s3.tif"]
    fractions = DataSpec(source="annotations", folder=folder)  # 6 items: 3 / 2 (1.5 rounds to even) / 1
    assert stacks(fractions, "train") == ["s0.tif", "s1.tif", "s1.tif"] and stacks(fractions, "test") == ["s4.tif"]

    with pytest.raises(ValueError, match="s9.tif"):
        stacks(DataSpec(source="annotations", folder=folder, split_stacks={"train": ["s9.tif"], "val": ["s0"]}),
               "train")
    with pytest.raises(ValueError, match="at least 7 stacks, there are 6"):
        stacks(DataSpec(source="annotations", folder=folder, split_counts=(6, 1)), "train")
    with pytest.raises(ValueError, match="'train' and 'val'"):
        DataSpec(source="annotations", folder=folder, split_stacks={"train": ["s0.tif"], "val": ["s0"]})
    with pytest.raises(ValueError, match="at least one val"):
        DataSpec(source="annotations", folder=folder, split_stacks={"train": ["s0.tif"]})
    with pytest.raises(ValueError, match="exclude each other"):
        DataSpec(source="annotations", folder=folder, split_counts=(1, 1), split_stacks={"train": ["a"], "val": ["b"]})
    with pytest.raises(ValueError, match="needs data.source 'annotations'"):
        DataSpec(split_stacks={"train": ["a"], "val": ["b"]})
    with pytest.raises(ValueError, match="two non-negative integers"):
        DataSpec(split_counts=(3, -1))
    # a config with either round-trips through JSON
    cfg = tiny_config(data=named)
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg


def test_counts_split_simulated_items_by_index():
    spec = DataSpec(n_stacks=5, shape=(10, 32, 32), split_counts=(3, 1))
    assert [m["index"] for _, _, m in raw_split(spec, "val")] == [3]
    assert [m["index"] for _, _, m in raw_split(spec, "test")] == [4]


def test_a_time_budget_validates_and_saves_before_it_stops(tmp_path):
    """No validation is due before the budget ends (val_every 10000): the steps trained count all the same."""
    cfg = tiny_config(max_steps=10_000, val_every=10_000, max_minutes=0.02)
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["stop_reason"] == "max_minutes"
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    history = json.loads((tmp_path / "run" / "log.json").read_text())["history"]
    assert 0 < last["step"] < 10_000
    assert [h["step"] for h in history] == [last["step"]]  # validated at the last step trained
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["step"] == best["best_step"] == last["step"] == summary["best_step"]
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    # resumed with the budget spent: nothing more to train, and nothing is validated twice
    train(cfg, tmp_path / "run", progress=False)
    assert len(json.loads((tmp_path / "run" / "log.json").read_text())["history"]) == 1


def test_train_and_evaluate_share_the_split_so_before_and_after_score_the_same_stacks(tmp_path):
    folder = annotated_folder(tmp_path / "my_stacks", 6)
    tiny_config(max_steps=2, val_every=2).save(tmp_path / "c.json")
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--config", str(tmp_path / "c.json"), "--data", str(folder), "--out",
                                  str(tmp_path / "run"), "--train", "s0.tif,s1.tif", "--train", "s2.tif",
                                  "--val", "s3.tif"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert saved["split_stacks"] == {"train": ["s0.tif", "s1.tif", "s2.tif"], "val": ["s3.tif"]}
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["train"] == ["s0.tif", "s1.tif", "s2.tif"] and split["val"] == ["s3.tif"]
    assert load_checkpoint(tmp_path / "run" / "best.pt")["val_scores"]["n"] == 1  # tuned on s3 alone

    def scored(*args: str) -> list[str]:
        result = runner.invoke(main, ["evaluate", *args])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert {"precision", "recall", "f1", "rmse"} <= set(report["pooled"])
        return [s["stack"] for s in report["per_stack"]]

    after = str(tmp_path / "run" / "best.pt")
    assert scored(after) == ["s4.tif", "s5.tif"]  # the checkpoint's own split definition
    assert scored(after, "--data", str(folder)) == ["s4.tif", "s5.tif"]  # same folder, same definition
    assert scored(after, "--split", "val") == ["s3.tif"]
    # a model trained elsewhere (simulated data) on the run's stacks
    train(tiny_config(max_steps=1, val_every=1), tmp_path / "base", progress=False)
    before = str(tmp_path / "base" / "best.pt")
    assert scored(before, "--data-of", str(tmp_path / "run")) == ["s4.tif", "s5.tif"]
    assert scored(before, "--data-of", after) == ["s4.tif", "s5.tif"]
    assert scored(before, "--data", str(folder), "--split-file", str(tmp_path / "run" / "split.json")) == [
        "s4.tif", "s5.tif"]
    assert scored(before, "--data", str(folder), "--train", "s0,s1,s2", "--val", "s3") == ["s4.tif", "s5.tif"]
    assert scored(before, "--data", str(folder), "--counts", "4,1") == ["s5.tif"]
    assert scored(before, "--data", str(folder)) == ["s5.tif"]  # finetune.json's split: 3 / 2 / 1

    for bad in (["--counts", "3"], ["--counts", "2,1", "--train", "s0"], ["--train", "s0"],
                ["--data-of", str(tmp_path / "run"), "--counts", "2,1"]):
        result = runner.invoke(main, ["evaluate", before, "--data", str(folder), *bad])
        assert result.exit_code == 2, (bad, result.output)
    result = runner.invoke(main, ["train", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "x"),
                                  "--train", "s0", "--val", "s1"])  # names, but simulated data
    assert result.exit_code == 2 and "annotations" in result.output
