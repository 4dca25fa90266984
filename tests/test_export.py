"""Checkpoint -> ONNX: self-contained file, dmdet metadata parsed back, ORT vs torch parity, dynamic shapes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from dmdet_infer import threshold as autothreshold  # noqa: E402
from dmdet_infer.metadata import from_props  # noqa: E402
from export.onnx_export import export_checkpoint  # noqa: E402
from training.config import DataSpec, TrainConfig  # noqa: E402
from training.network import DetNet3D  # noqa: E402
from training.train import build_model  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny 'trained' checkpoint: random weights with non-trivial running statistics and a tuned threshold."""
    torch.set_num_threads(1)
    cfg = TrainConfig(name="tiny-export", width=4, data=DataSpec(n_stacks=8, shape=(10, 64, 64)))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 1, 6, 16, 16) * 2 + 1)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "step": 100, "threshold": 0.37,
                "val_scores": {"f1_mean": 0.9, "rmse_mean": float("nan"), "n": 2}}, path)
    return path, model.eval()


def test_export_round_trip(checkpoint, tmp_path):
    path, model = checkpoint
    out = tmp_path / "model.onnx"
    report = export_checkpoint(path, out, calibration_volumes=1)  # the default, 8 per noise model, takes longer
    assert report["parity_max_abs_diff"] <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no external data, no temp files
    proto = onnx.load(str(out), load_external_data=False)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert report["size_bytes"] == out.stat().st_size
    assert "InstanceNormalization" not in report["ops"]

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    info = from_props(session.get_modelmeta().custom_metadata_map)
    assert info.kind == "density" and info.threshold == pytest.approx(0.37)
    assert info.stride_zyx == (1, 4, 4) and info.halo_zyx == (15, 36, 36)
    assert info.sigma_zyx == (1.0, 1.5, 1.5)
    assert info.normalisation == {"method": "local_median_mad", "block": [8, 32, 32]}  # the config's
    assert info.spot_sigma_range_zyx == ((0.7, 1.5), (1.0, 2.0), (1.0, 2.0))  # training.simulate's ranges
    assert info.name == "tiny-export" and info.config["width"] == 4
    assert info.validation_scores["f1_mean"] == 0.9 and info.validation_scores["rmse_mean"] is None
    assert "simulated" in info.training_data
    rates = info.noise_peaks["per_voxel"]  # the noise calibration behind --threshold auto
    assert report["noise_calibration"] and info.noise_peaks["shape"] == list(autothreshold.FAMILY_SHAPE)
    assert info.noise_peaks["volumes"] == 1
    assert info.noise_peaks["noise"] == list(autothreshold.NOISE_MODELS)  # locally normalised: the noise family
    assert len(rates) == len(info.noise_peaks["thresholds"]) and all(b <= a for a, b in zip(rates, rates[1:]))

    # dynamic batch and Z/Y/X: another shape than the parity check's, against torch
    x = np.random.default_rng(3).standard_normal((3, 1, 7, 20, 36)).astype(np.float32)
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert got.shape == x.shape and np.abs(got - ref).max() <= 1e-4


def test_export_binary_and_threshold_override(tmp_path):
    cfg = TrainConfig(name="bin", width=2, target="binary", loss="binary")
    path = tmp_path / "b.pt"
    torch.save({"model": DetNet3D(width=2).state_dict(), "config": cfg.to_dict(), "step": 1}, path)
    report = export_checkpoint(path, tmp_path / "b.onnx", threshold=0.8, calibration_shape=None)
    assert report["kind"] == "binary" and not report["threshold_tuned"]
    info = from_props(ort.InferenceSession(str(tmp_path / "b.onnx")).get_modelmeta().custom_metadata_map)
    assert info.sigma_zyx is None and info.threshold == 0.8 and info.noise_peaks is None


def test_cli(checkpoint, tmp_path):
    from click.testing import CliRunner

    from export.__main__ import main

    result = CliRunner().invoke(main, [str(checkpoint[0]), "-o", str(tmp_path / "m.onnx"), "--opset", "17",
                                        "--calibration-shape", "6,32,32", "--calibration-volumes", "1"])
    assert result.exit_code == 0, result.output
    assert "parity: max |onnxruntime - torch|" in result.output
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 17
    assert from_props({p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
                      ).noise_peaks["volumes"] == 1


def test_export_fp16_casts_at_both_ends_and_loads_in_dmdet_infer(checkpoint, tmp_path):
    """--fp16: half-precision weights behind a float32 interface, recorded in the metadata; the calibration is
    copied from the fp32 twin; dmdet_infer loads and runs it like any model."""
    from click.testing import CliRunner

    from dmdet_infer import Detector
    from dmdet_infer.model import Model
    from export.__main__ import main

    path, model = checkpoint
    fp32 = tmp_path / "fp32.onnx"
    export_checkpoint(path, fp32, calibration_shape=None)
    out = tmp_path / "fp16.onnx"
    result = CliRunner().invoke(main, [str(path), "-o", str(out), "--fp16", "--calibration-from", str(fp32)])
    assert result.exit_code == 0, result.output
    proto = onnx.load(str(out))
    assert {t.data_type for t in proto.graph.initializer} == {onnx.TensorProto.FLOAT16}
    for value in (proto.graph.input[0], proto.graph.output[0]):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.node[0].op_type == "Cast" and proto.graph.node[-1].op_type == "Cast"
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["dmdet.precision"] == '"fp16"'
    info = from_props(props)
    assert info.precision == "fp16" and info.noise_peaks is None  # the fp32 twin had no calibration either
    assert from_props(ort.InferenceSession(str(fp32)).get_modelmeta().custom_metadata_map).precision == "fp32"

    try:  # the run part needs fp16 kernels in this onnxruntime's CPU provider
        loaded = Model(out, device="cpu")
    except Exception as exc:
        pytest.skip(f"onnxruntime {ort.__version__} CPU cannot run the fp16 graph: {exc}")
    x = np.random.default_rng(3).standard_normal((6, 20, 36)).astype(np.float32)
    got = loaded.run(x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)[None, None]).numpy()[0, 0]
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.abs(got - ref).max() <= 1e-2
    assert loaded.info.precision == "fp16"
    assert len(Detector(loaded, threshold=0.5).detect(np.random.default_rng(0).poisson(5, (6, 32, 32)))) >= 0


def test_a_model_fine_tuned_on_annotated_stacks_defaults_to_its_tuned_threshold(tmp_path):
    """Its threshold was tuned on the user's validation stacks: the export carries no noise calibration unless
    asked (--calibration), so dmdet-infer's default is that threshold, not 'auto'."""
    from click.testing import CliRunner

    from dmdet_infer import Detector
    from export.__main__ import main
    from training.runner import detector_for

    cfg = TrainConfig(name="mine", width=2, data=DataSpec(source="annotations", folder="my_stacks",
                                                          split_counts=(3, 1), normalisation={"method": "median_mad"}))
    path = tmp_path / "best.pt"
    torch.save({"model": build_model(cfg).state_dict(), "config": cfg.to_dict(), "step": 40, "threshold": 0.23,
                "val_scores": {"f1_mean": 0.8, "n": 1}}, path)
    runner = CliRunner()
    result = runner.invoke(main, [str(path), "-o", str(tmp_path / "tuned.onnx")])
    assert result.exit_code == 0, result.output
    assert "default threshold: 0.23 (tuned on the validation stacks" in result.output
    detector = Detector(tmp_path / "tuned.onnx", device="cpu")
    assert detector.info.noise_peaks is None and not detector.auto and detector.threshold == pytest.approx(0.23)
    assert detector.detect(np.zeros((6, 32, 32), np.float32)).meta["threshold"] == pytest.approx(0.23)
    assert "annotated stacks from my_stacks" in detector.info.training_data
    exported, _ = detector_for(tmp_path / "tuned.onnx")  # what `python -m training evaluate` scores it with
    assert not exported.auto and exported.threshold == pytest.approx(0.23)

    result = runner.invoke(main, [str(path), "-o", str(tmp_path / "auto.onnx"), "--calibration",
                                  "--calibration-shape", "6,32,32", "--calibration-volumes", "1"])
    assert result.exit_code == 0, result.output
    assert "default threshold: auto" in result.output
    calibrated = Detector(tmp_path / "auto.onnx", device="cpu")
    assert calibrated.info.noise_peaks["volumes"] == 1 and calibrated.auto

    # a model trained on simulated data is calibrated as before, unless told not to
    report = export_checkpoint(path, tmp_path / "none.onnx", calibrate=False, calibration_volumes=1)
    assert not report["noise_calibration"] and report["default_threshold"] == pytest.approx(0.23)
    from export.onnx_export import calibrates

    assert calibrates(TrainConfig()) and not calibrates(cfg) and calibrates(cfg, True)
    assert not calibrates(TrainConfig(), False)


def test_export_of_the_stem_variant_matches_torch_and_runs_in_dmdet_infer(tmp_path):
    """The half-resolution variant (``stem``): exported with its stride and halo, equal to torch, and detected with."""
    from dmdet_infer import Detector

    torch.manual_seed(1)
    cfg = TrainConfig(name="tiny-stem", width=4, stem=True, norm="frozen",
                      data=DataSpec(n_stacks=8, shape=(10, 64, 64)))
    model = build_model(cfg)
    path = tmp_path / "stem.pt"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "step": 1, "threshold": 0.5}, path)
    out = tmp_path / "stem.onnx"
    report = export_checkpoint(path, out, calibrate=False)
    assert report["parity_max_abs_diff"] <= 1e-4
    info = from_props(ort.InferenceSession(str(out)).get_modelmeta().custom_metadata_map)
    assert info.stride_zyx == (1, 8, 8) and info.halo_zyx == (17, 76, 76) and info.config["stem"] is True
    volume = np.random.default_rng(0).poisson(10.0, (6, 40, 44)).astype(np.float32)
    whole = Detector(str(out), threshold=0.05).detect(volume)
    tiled = Detector(str(out), threshold=0.05, tile=(6, 24, 24)).detect(volume)
    assert np.array_equal(whole.score, tiled.score) and len(whole) > 100  # a local operator: tiles = the whole
    assert np.allclose(whole.zyx, tiled.zyx, rtol=0, atol=1e-9)
