"""training.runner: the shipped pipeline on a checkpoint before export, and evaluate() through it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.runner import TorchModel, detector_for  # noqa: E402
from training.simulate import SimParams, simulate  # noqa: E402

CHECKPOINT = ROOT / "training/checkpoints/dmdet-w8-general3.pt"  # exported as dmdet_infer/models/default.onnx
EXPORTED = ROOT / "dmdet_infer/models/default.onnx"


def _stack() -> tuple[np.ndarray, np.ndarray]:
    vol, pos = simulate(SimParams(shape=(10, 64, 64), n_particles=12, snr=4.0), np.random.default_rng(5))
    return vol, pos


def test_a_checkpoint_runs_through_the_detector_as_its_export_does():
    vol, _ = _stack()
    torch_detector, cfg = detector_for(CHECKPOINT, threshold=0.5)
    onnx_detector, cfg_onnx = detector_for(EXPORTED, threshold=0.5, precision="fp32")
    assert onnx_detector.model.precision == "fp32"  # the options reach the model
    assert isinstance(torch_detector.model, TorchModel) and cfg.name == cfg_onnx.name
    a, b = torch_detector.detect(vol), onnx_detector.detect(vol)
    assert len(a) == len(b) > 5
    np.testing.assert_allclose(a.zyx, b.zyx, atol=1e-3)
    np.testing.assert_allclose(a.score, b.score, atol=1e-4)


def test_evaluate_scores_what_dmdet_infer_finds(tmp_path):
    import tifffile

    from training.train import evaluate

    folder = tmp_path / "stacks"
    folder.mkdir()
    for k in range(4):  # name order: 2 train, 1 val, 1 test
        vol, pos = simulate(SimParams(shape=(10, 64, 64), n_particles=12, snr=4.0), np.random.default_rng(10 + k))
        tifffile.imwrite(folder / f"s{k}.tif", vol)
        np.savetxt(folder / f"s{k}.csv", pos, delimiter=",", header="z,y,x", comments="")
    result = evaluate(EXPORTED, "test", data_overrides={"source": "annotations", "folder": str(folder),
                                                        "online": False, "split": (0.5, 0.25, 0.25)})
    assert result["threshold"] == "auto" and len(result["per_stack"]) == 1
    stack = result["per_stack"][0]
    from dmdet_infer import Detector

    spots = Detector(EXPORTED).detect(tifffile.imread(folder / "s3.tif"))
    assert stack["n_pred"] == len(spots) and stack["threshold"] == spots.meta["threshold"]
    assert result["pooled"]["f1"] == stack["f1"] > 0.8


def test_the_evaluation_takes_the_detection_config():
    from dmdet_infer import DetectorConfig

    config = DetectorConfig(threshold=0.5, split_pairs=False, refine="gaussian", model="ignored.onnx")
    detector, _ = detector_for(EXPORTED, config=config)  # the model is the path given, not the config's
    assert (detector.fixed_threshold, detector.split_pairs, detector.refine) == (0.5, False, "gaussian")
    assert detector.model.path == EXPORTED and detector.config == config
    detector, _ = detector_for(EXPORTED, threshold=0.3, config=config)  # threshold overrides the config's
    assert detector.fixed_threshold == 0.3 and detector.config == config.replace(threshold=0.3)


def test_evaluate_cli_takes_a_detection_config_file(tmp_path):
    import json

    import tifffile
    from click.testing import CliRunner

    from training.__main__ import main

    folder = tmp_path / "stacks"
    folder.mkdir()
    for k in range(4):
        vol, pos = simulate(SimParams(shape=(10, 64, 64), n_particles=12, snr=4.0), np.random.default_rng(20 + k))
        tifffile.imwrite(folder / f"s{k}.tif", vol)
        np.savetxt(folder / f"s{k}.csv", pos, delimiter=",", header="z,y,x", comments="")
    config = tmp_path / "options.json"
    config.write_text(json.dumps({"threshold": 0.95, "split_pairs": False}))
    out = tmp_path / "scores.json"
    args = ["evaluate", str(EXPORTED), "--data", str(folder), "--counts", "2,1", "-o", str(out)]
    result = CliRunner().invoke(main, [*args, "--config", str(config)])
    assert result.exit_code == 0, result.output
    strict = json.loads(out.read_text())
    assert strict["threshold"] == 0.95
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    default = json.loads(out.read_text())
    assert default["threshold"] == "auto" and strict["pooled"]["fp"] + strict["pooled"]["tp"] < \
        default["pooled"]["fp"] + default["pooled"]["tp"]  # a cut at 0.95 keeps fewer spots
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"threshold": 2}))
    result = CliRunner().invoke(main, [*args, "--config", str(bad)])
    assert result.exit_code == 2 and "threshold" in result.output
