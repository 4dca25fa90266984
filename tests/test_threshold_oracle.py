"""benchmarks/threshold_oracle.py on tiny stacks: the rule's counts and the oracle cuts are consistent."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def test_threshold_oracle_quick(tmp_path):
    from benchmarks.threshold_oracle import main

    out = tmp_path / "oracle"
    assert main(["--quick", "--n", "1", "--big", "0", "--home", "0", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert set(rows) == {"ptc_snr1", "ptc_snr2", "ptc_snr4", "ptc_snr7", "simfish_a", "simfish_b",
                         "tissue_moderate", "tissue_faint", "yeast8bit"}
    for r in rows.values():
        a = r["auto"]
        assert a["tp"] + a["fn"] == r["particles"]
        assert r["oracle"]["f1"] >= r["oracle_score"]["f1"] - 1e-12  # the score-only cuts are among its cuts
        assert 0.0 <= a["f1"] <= 1.0
    assert rows["ptc_snr7"]["oracle"]["f1"] > 0.5  # bright spots are found
    assert "| ptc_snr7 |" in out.with_suffix(".md").read_text()
