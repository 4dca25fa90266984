"""The README's fine-tuning walk-through (annotate -> train -> evaluate before/after -> export -> dmdet-infer) runs
as written, on 8 small annotated stacks, with the training cut to a few steps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
tifffile = pytest.importorskip("tifffile")

ROOT = Path(__file__).resolve().parents[1]
#: what the test adds to the README's training command: a few steps instead of 5 minutes
SHORT = ["--max-steps", "4", "--set", "val_every=2"]


def run(words: list[str], cwd: Path) -> str:
    if words[0] == "python":
        words = [sys.executable, *words[1:]]
    elif words[0] == "dmdet-infer":
        words = [sys.executable, "-c", "import sys; from dmdet_infer.cli import main; sys.exit(main())", *words[1:]]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    done = subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (words, done.stdout[-2000:], done.stderr[-4000:])
    return done.stdout


def test_the_fine_tuning_walkthrough_runs_as_written(tmp_path):
    from benchmarks.finetune_walkthrough import readme_commands
    from training.simulate import SimParams, simulate

    commands = readme_commands()
    assert [c[:3] if c[0] == "python" else c[:1] for c in commands] == [
        ["python", "-m", "training"], ["python", "-m", "training"], ["python", "-m", "training"],
        ["python", "-m", "export"], ["python", "-m", "training"], ["dmdet-infer"]]
    # the user's working directory: the checkout's files the commands name, and their annotated stacks
    for name in ("training", "dmdet_infer"):
        (tmp_path / name).symlink_to(ROOT / name)
    stacks = tmp_path / "my_stacks"
    stacks.mkdir()
    for k in range(8):  # the 10x64x64 crop of finetune.json needs stacks at least that large
        vol, pos = simulate(SimParams(shape=(10, 64, 64), n_particles=10, snr=4.0), np.random.default_rng(50 + k))
        tifffile.imwrite(stacks / f"stack_{k:02d}.tif", vol.astype(np.float32))
        np.savetxt(stacks / f"stack_{k:02d}.csv", pos, delimiter=",", header="z,y,x", comments="")
    shutil.copy(stacks / "stack_07.tif", tmp_path / "new_stack.tif")

    train, before, after, export, exported, infer = commands
    assert "--data" in train and train[train.index("--out") + 1] == "runs/mine"
    run(train + SHORT, tmp_path)
    run_dir = tmp_path / "runs" / "mine"
    split = json.loads((run_dir / "split.json").read_text())
    assert split["train"] == [f"stack_{k:02d}.tif" for k in range(4)]
    assert split["val"] == ["stack_04.tif", "stack_05.tif"]

    reports = {name: json.loads(run(words, tmp_path)) for name, words in
               (("before", before), ("after", after))}
    held_out = ["stack_06.tif", "stack_07.tif"]
    for report in reports.values():  # the same held-out stacks, pooled and per-stack figures
        assert [s["stack"] for s in report["per_stack"]] == held_out
        assert {"precision", "recall", "f1", "rmse"} <= set(report["pooled"])
    assert reports["before"]["threshold"] == "auto"  # the shipped model as it ships

    export_out = run(export, tmp_path)
    assert "default threshold:" in export_out and "(tuned on the validation stacks" in export_out
    report = json.loads(run(exported, tmp_path))
    assert [s["stack"] for s in report["per_stack"]] == held_out
    assert report["threshold"] == pytest.approx(reports["after"]["threshold"])  # its tuned threshold, not auto
    assert report["pooled"]["f1"] == pytest.approx(reports["after"]["pooled"]["f1"], abs=0.02)

    run(infer, tmp_path)
    rows = (tmp_path / "spots.csv").read_text().splitlines()
    assert rows[0].startswith("z,y,x,score") and (tmp_path / "check.png").stat().st_size > 0
    print("walk-through figures (8 stacks of 10x64x64, 4 training steps):",
          {k: {m: round(v["pooled"][m], 3) for m in ("precision", "recall", "f1")} for k, v in
           {**reports, "exported": report}.items()})
