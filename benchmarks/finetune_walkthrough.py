"""The README's fine-tuning walk-through as a user runs it, and whether `python -m training evaluate` and
`dmdet-infer` agree (issue 17).

    python benchmarks/finetune_walkthrough.py [--out benchmarks/results/finetune_walkthrough] [--work DIR]

In a fresh working directory: 8 annotated stacks of smFISH in tissue (20x256x256, condition ``tissue_moderate``
of benchmarks/_generators.py, seed 11, items 20-27 of its validation part: no stack of the generalisation table),
then every command of the README's section "Teach it your spots" exactly as written (fine-tune for the config's
5 minutes, evaluate before and after, export, evaluate the export, dmdet-infer), then dmdet-infer with the
shipped and the exported model on the two held-out stacks, scored with ``training.matching`` against their CSVs
and pooled as ``evaluate`` pools. Writes OUT.json and OUT.md atomically. About 8 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import _generators as gen  # noqa: E402
from training.matching import match  # noqa: E402

HELD_OUT = ("stack_06", "stack_07")


def readme_commands() -> list[list[str]]:
    """The bash commands of the README's fine-tuning section, comments dropped."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Teach it your spots")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else None]
    return [words for block in re.findall(r"```bash\n(.*?)```", section, re.S) for line in block.splitlines()
            if (words := shlex.split(line, comments=True))]


def run(words: list[str], cwd: Path) -> tuple[str, float]:
    """Run one README command as a user would (python: this interpreter; dmdet-infer: the installed CLI)."""
    exe = {"python": [sys.executable], "dmdet-infer": [sys.executable, "-m", "dmdet_infer.cli"]}[words[0]]
    t0 = time.perf_counter()
    done = subprocess.run(exe + words[1:], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"})
    if done.returncode:
        raise SystemExit(f"{' '.join(words)} failed:\n{done.stderr[-3000:]}")
    return done.stdout, time.perf_counter() - t0


def pooled(pred_dir: Path, truth_dir: Path) -> dict:
    """Pooled P/R/F1 of dmdet-infer's CSVs for the held-out stacks (matching as ``evaluate`` does)."""
    tp = fp = fn = 0
    for name in HELD_OUT:
        pred = np.loadtxt(pred_dir / f"{name}.csv", delimiter=",", skiprows=1, usecols=(0, 1, 2), ndmin=2)
        truth = np.loadtxt(truth_dir / f"{name}.csv", delimiter=",", skiprows=1, ndmin=2)
        pi, ti, _ = match(pred, truth, 5.0)
        tp, fp, fn = tp + len(pi), fp + len(pred) - len(pi), fn + len(truth) - len(ti)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
            "f1": 2 * tp / max(2 * tp + fp + fn, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/finetune_walkthrough"))
    parser.add_argument("--work", default=None, help="working directory (default: a fresh temporary one)")
    args = parser.parse_args()
    import tifffile

    work = Path(args.work or tempfile.mkdtemp(prefix="dmdet-walk-"))
    stacks = work / "my_stacks"
    stacks.mkdir(parents=True, exist_ok=True)
    for name in ("training", "dmdet_infer"):
        if not (work / name).exists():
            (work / name).symlink_to(ROOT / name)
    for k in range(8):
        vol, truth = gen.make_stack("tissue_moderate", "validation", 20 + k, seed=11)
        tifffile.imwrite(stacks / f"stack_{k:02d}.tif", np.asarray(vol))
        np.savetxt(stacks / f"stack_{k:02d}.csv", truth, delimiter=",", header="z,y,x", comments="")
    (work / "new_stack.tif").write_bytes((stacks / "stack_07.tif").read_bytes())

    train, before, after, export, exported, infer = readme_commands()
    out: dict = {"work": str(work), "commands": [" ".join(c) for c in (train, before, after, export, exported, infer)]}
    log, out["train_s"] = run(train, work)
    out["history"] = json.loads((work / "runs/mine/log.json").read_text())["history"]
    for label, words in (("before", before), ("after", after)):
        out[label] = json.loads(run(words, work)[0])
    out["export_log"] = run(export, work)[0].strip().splitlines()[-2:]
    out["exported"] = json.loads(run(exported, work)[0])
    out["infer_line"] = run(infer, work)[0].strip()
    held = [str(stacks / f"{name}.tif") for name in HELD_OUT]
    run(["dmdet-infer", *held, "-o", "cli_shipped/"], work)
    run(["dmdet-infer", *held, "-o", "cli_exported/", "--model", "my_model.onnx"], work)
    out["cli_shipped"] = pooled(work / "cli_shipped", stacks)
    out["cli_exported"] = pooled(work / "cli_exported", stacks)

    rows = [("shipped model, `--threshold auto`", out["before"], out["cli_shipped"]),
            ("fine-tuned checkpoint (PyTorch)", out["after"], None),
            ("fine-tuned, exported (its tuned threshold)", out["exported"], out["cli_exported"])]
    lines = ["| model | evaluate: P / R / F1 (threshold) | dmdet-infer CSVs: P / R / F1 |", "| --- | --- | --- |"]
    for name, ev, cli in rows:
        p = ev["pooled"]
        c = "" if cli is None else f"{cli['precision']:.3f} / {cli['recall']:.3f} / {cli['f1']:.4f}"
        lines.append(f"| {name} | {p['precision']:.3f} / {p['recall']:.3f} / {p['f1']:.4f} ({ev['threshold']}) | {c} |")
    table = "\n".join(lines)
    print(table)
    target = Path(args.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(out, indent=1, default=str)), (".md", table + "\n")):
        tmp = target.with_name(target.name + suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(target.with_name(target.name + suffix))


if __name__ == "__main__":
    main()
