"""benchmarks/ablations.py: trains each variant through the training CLI and tabulates its log beside the reference."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import ablations  # noqa: E402


def test_ablation_study_trains_and_tabulates(tmp_path, monkeypatch):
    cfg = json.loads((ROOT / "training/configs/smoke.json").read_text())
    cfg.update(loss="mse", val_every=2, max_steps=100)
    cfg["data"]["n_stacks"] = 4
    config = tmp_path / "mse.json"
    config.write_text(json.dumps(cfg))
    monkeypatch.setattr(ablations, "VARIANTS", {"mse": ("MSE instead of AWing", str(config))})
    out = tmp_path / "abl"

    assert ablations.main(["--runs", str(tmp_path / "runs"), "--steps", "4", "--out", str(out)]) == 0

    report = json.loads(out.with_suffix(".json").read_text())
    assert report["steps"] == [2, 4]  # the variant's validation steps, capped by --steps
    ref, mse = report["rows"]
    assert ref["name"] == "reference" and ref["f1"]["750"] > 0.5  # stage 1's own log
    assert mse["name"] == "mse" and set(mse["f1"]) == {"2", "4"}
    assert all(0.0 <= v <= 1.0 for v in mse["f1"].values())
    assert (tmp_path / "runs/mse/last.pt").exists()
    md = out.with_suffix(".md").read_text()
    assert "| MSE instead of AWing |" in md and "val F1 @ 4" in md
