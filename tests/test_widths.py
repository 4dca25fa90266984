"""benchmarks/widths.py: sizes, CPU time and F1 of several exported models, and the issue's choice rule."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import widths  # noqa: E402

SHIPPED = ROOT / "dmdet_infer/models/default.onnx"


def test_width_table_measures_each_model_and_picks_the_fastest_eligible(tmp_path):
    out = tmp_path / "widths"
    argv = ["--model", f"a={SHIPPED}", "--model", f"b={SHIPPED}", "--shape", "10,64,64", "--n-per-cell", "1",
            "--repeats", "1", "--out", str(out)]

    assert widths.main(argv) == 0

    report = json.loads(out.with_suffix(".json").read_text())
    a, b = report["rows"]["a"], report["rows"]["b"]
    assert a["params"] == b["params"] == 125361 and a["gflops"] > 1.0  # the shipped width-8 network
    assert a["f1"] == b["f1"] and all(0.0 <= v <= 1.0 for v in a["f1"].values())  # same model, same stacks
    assert a["seconds_per_volume"] > 0 and report["choice"] in ("a", "b")
    faster = min(("a", "b"), key=lambda n: report["rows"][n]["seconds_per_volume"])
    assert report["choice"] == faster  # both are within 0.01 F1 of the best: the faster one is chosen
    assert len(report["per_image"]["a"]["1.0"]) == 3  # one stack per density level
    assert "(chosen)" in out.with_suffix(".md").read_text()
