"""benchmarks/robustness.py: the default pipeline and its two ablations on the same candidates."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import robustness  # noqa: E402


def test_robustness_table_scores_each_method_on_each_condition(tmp_path):
    out = tmp_path / "rob"
    argv = ["--n", "1", "--conditions", "PTC,brightness log-sd 0.7", "--shape", "10,128,128", "--out", str(out)]
    assert robustness.main(argv) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    rows = report["rows"]
    assert len(rows) == 2 * 3 * 3  # conditions x SNRs x methods
    assert {r["method"] for r in rows} == {"default", "no pair split", "score-only auto"}
    assert all(0.0 <= r["f1"] <= 1.0 and r["tp"] + r["fn"] == 31 for r in rows)  # 500 per 512x512 -> 31
    assert all(("faint_recall" in r) == r["condition"].startswith("brightness") for r in rows)
    bright = [r for r in rows if r["snr"] == 7.0 and r["method"] == "default"]
    assert all(r["f1"] > 0.9 for r in bright)
    assert "| PTC | 7 |" in out.with_suffix(".md").read_text()


def test_stacks_follow_their_condition():
    vol, pos, factor = robustness.stack("brightness log-sd 0.35", 4.0, 0, (6, 64, 64))
    assert vol.shape == (6, 64, 64) and len(pos) == len(factor) == 8 and factor.std() > 0
    vol, pos, factor = robustness.stack("offset + read noise", 4.0, 0, (6, 64, 64))
    assert factor is None and vol.mean() > 100  # camera offset 100
