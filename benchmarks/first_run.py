"""First run against warm runs of the command line: what a fresh install or container pays for numba's JIT.

    python benchmarks/first_run.py [--repeats 3] [--tree PATH ...] [--out benchmarks/results/first_run]

For each source tree (default: this checkout; e.g. add a ``git worktree`` of an older commit to compare side by
side), runs ``python -m dmdet_infer.cli examples/virus_snr4.tif -o spots.csv`` in fresh processes: ``repeats``
times with an empty numba cache (``NUMBA_CACHE_DIR`` set to a new folder: a fresh install's first run) and
``repeats`` times with the cache that the first of them left (warm). Prints a table of wall-clock medians and the
ratio first / warm; writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "virus_snr4.tif"


def run_once(tree: Path, cache: Path, out_csv: Path) -> float:
    """Wall seconds of one CLI process on the example with ``tree`` first on the path and numba's cache at
    ``cache``."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dmdet_infer.cli", str(EXAMPLE), "-o", str(out_csv)], env=env,
                   check=True, capture_output=True, cwd=tree)
    return time.perf_counter() - start


def measure(tree: Path, repeats: int) -> dict:
    """First-run and warm wall times (medians of ``repeats``) of the CLI from ``tree``."""
    first, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeats):
            cache = Path(tmp) / f"cold{k}"
            first.append(run_once(tree, cache, Path(tmp) / "spots.csv"))
            if k == 0:
                warm_cache = cache
        for _ in range(repeats):
            warm.append(run_once(tree, warm_cache, Path(tmp) / "spots.csv"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True,
                            text=True).stdout.strip()
    f, w = float(np.median(first)), float(np.median(warm))
    return {"tree": str(tree), "commit": commit, "first_s": first, "warm_s": warm, "first_median_s": round(f, 3),
            "warm_median_s": round(w, 3), "ratio": round(f / w, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tree", type=Path, action="append", help="source tree(s); default: this checkout")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "first_run")
    args = parser.parse_args(argv)
    rows = []
    for tree in args.tree or [ROOT]:
        rows.append(measure(tree.resolve(), args.repeats))
        print(f"{rows[-1]['commit']}: first {rows[-1]['first_median_s']} s, warm {rows[-1]['warm_median_s']} s",
              flush=True)
    lines = [f"`dmdet-infer {EXAMPLE.relative_to(ROOT)} -o spots.csv`, fresh process each, median of "
             f"{args.repeats} ({platform.node()}, {os.cpu_count()} CPUs, "
             f"load {os.getloadavg()[0]:.1f}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC):", "",
             "| commit | first run s (empty numba cache) | warm s | first / warm |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['commit']} | {r['first_median_s']} | {r['warm_median_s']} | {r['ratio']} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "repeats": args.repeats}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
