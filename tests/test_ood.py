"""benchmarks/ood.py end to end on tiny stacks: annotated folder -> before -> fine-tune -> export -> after."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

pytest.importorskip("torch")


def test_written_stacks_follow_the_user_format_and_split(tmp_path):
    from benchmarks.ood import split, write_stacks
    from training.annotations import load_annotations

    write_stacks(tmp_path, {"sigma_xy": 2.5, "sigma_z": 2.0}, 2, (6, 32, 32), seed=1)
    items = load_annotations(tmp_path)
    assert len(items) == 4 and all(v.shape == (6, 32, 32) and len(p) > 0 for v, p in items)
    parts = split(tmp_path)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    assert parts["test"][0].name == "stack_03.tif"


def test_ood_run_scores_before_and_after_fine_tuning(tmp_path):
    from benchmarks.ood import main

    out = tmp_path / "ood"
    assert main(["--small", "--minutes", "0.05", "--n-per-snr", "2", "--conditions", "large spots",
                 "--dir", str(tmp_path), "--out", str(out)]) == 0
    report = json.loads(Path(f"{out}.json").read_text())
    rows = {r["condition"]: r for r in report["rows"]}
    assert set(rows) == {"training-like", "large spots"}
    after = rows["large spots"]
    for key in ("before", "retuned", "after"):
        assert 0.0 <= after[key]["f1"] <= 1.0 and len(after[key]["f1_per_stack"]) == after["n_test"] == 1
    assert 0.0 < after["threshold_after"] < 1.0 and after["fine_tune_s"] > 0
    # the re-tuned threshold is the best on validation, so it is in the grid and never worse there than 0.02 steps
    assert np.isclose(after["threshold_retuned"] / 0.02, round(after["threshold_retuned"] / 0.02))
    assert "| large spots |" in Path(f"{out}.md").read_text() and Path(f"{out}.png").stat().st_size > 1000


def test_training_cli_takes_an_annotation_folder(tmp_path):
    from click.testing import CliRunner

    from benchmarks.ood import write_stacks
    from training.__main__ import main

    write_stacks(tmp_path / "stacks", {}, 2, (6, 32, 32), seed=2)
    result = CliRunner().invoke(main, ["evaluate", str(ROOT / "training/checkpoints/dmdet-w8-crowded.pt"),
                                       "--data", str(tmp_path / "stacks"), "--split", "test"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["split"] == "test" and 0.0 <= scores["all"]["f1_mean"] <= 1.0
    write_stacks(tmp_path / "one", {}, 1, (6, 32, 32), seed=3)  # one stack: nothing in the validation split
    for p in sorted((tmp_path / "one").iterdir())[2:]:
        p.unlink()
    result = CliRunner().invoke(main, ["evaluate", str(ROOT / "training/checkpoints/dmdet-w8-crowded.pt"),
                                       "--data", str(tmp_path / "one"), "--split", "val"])
    assert result.exit_code == 1 and "is empty" in result.output and "Traceback" not in result.output
