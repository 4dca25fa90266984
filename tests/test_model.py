from pathlib import Path

import numpy as np
import pytest
from onnx_models import smoothing_model

from dmdet_infer.errors import InputError
from dmdet_infer.model import Model, default_model_path, working_providers


def test_loads_metadata_and_runs_on_cpu(model_path):
    model = Model(model_path, device="cpu")
    assert model.info.kind == "density"
    assert model.providers == ["CPUExecutionProvider"]
    assert not model.on_cuda


def test_missing_and_not_onnx_files(tmp_path):
    with pytest.raises(InputError, match=r"nope\.onnx: model file not found"):
        Model(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf at all" * 10)
    with pytest.raises(InputError, match=r"bad\.onnx: not a valid ONNX model"):
        Model(bad)


def test_model_without_metadata_or_wrong_rank_is_refused(tmp_path):
    plain = tmp_path / "plain.onnx"
    smoothing_model(plain, metadata=False)
    with pytest.raises(InputError, match=r"plain\.onnx: not a dmdet model: missing dmdet metadata dmdet.kind"):
        Model(plain)
    flat = tmp_path / "flat.onnx"
    smoothing_model(flat, rank=4)
    with pytest.raises(InputError, match=r"flat\.onnx: model input must be one 5D tensor"):
        Model(flat)


def test_cuda_request_without_cuda_is_a_clear_error(model_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    with pytest.raises(InputError, match="CUDA requested"):
        Model(model_path, device="cuda")
    with pytest.raises(InputError, match="device must be one of"):
        Model(model_path, device="tpu")


def test_working_providers_really_start_a_session(model_path):
    assert "CPUExecutionProvider" in working_providers(model_path)


def test_default_model_path_is_inside_the_package():
    assert default_model_path().parent.name == "models"


def test_io_binding_path_equals_plain_run(model_path):
    """The CUDA path's IO binding code, bound on the CPU here: same output as session.run."""
    model = Model(model_path, device="cpu", runtime="onnxruntime")
    assert model.io_binding is False  # CPU: never bound
    x = np.random.default_rng(0).standard_normal((5, 16, 24)).astype(np.float32)
    plain = model.run(x)
    model.io_binding, model.bind_device = None, "cpu"
    np.testing.assert_array_equal(model.run(x), plain)
    assert model.io_binding is True and model.io_binding_error is None
    np.testing.assert_array_equal(model.run(x), plain)


def test_io_binding_failure_falls_back_to_session_run_once(model_path):
    model = Model(model_path, device="cpu", runtime="onnxruntime")
    x = np.random.default_rng(1).standard_normal((5, 16, 24)).astype(np.float32)
    plain = model.run(x)
    model.io_binding, model.bind_device = None, "no-such-device"
    with pytest.warns(RuntimeWarning, match="IO binding failed"):
        np.testing.assert_array_equal(model.run(x), plain)
    assert model.io_binding is False and model.io_binding_error
    np.testing.assert_array_equal(model.run(x), plain)  # no second warning, no second try


def test_a_network_returning_another_shape_is_refused(tmp_path):
    """Issue 16 item 11: the model's output shape was never checked. A network that halves y and x (a pool
    without its upsampling) must not have its map read as spots."""
    import onnx

    model = smoothing_model(pool=True)
    graph = model.graph
    resize = next(n for n in graph.node if n.op_type == "Resize")
    mul = next(n for n in graph.node if n.op_type == "Mul")
    mul.input[0] = resize.input[0]  # skip the upsampling: the output is half the input's size in y and x
    graph.node.remove(resize)
    path = tmp_path / "half.onnx"
    onnx.save(model, str(path))
    m = Model(path, device="cpu")
    with pytest.raises(InputError, match="returned"):
        m.run(np.zeros((4, 16, 16), np.float32))


def test_runtime_choice_is_checked_and_reported(model_path, monkeypatch):
    import dmdet_infer.model as model_module

    assert Model(model_path, device="cpu", runtime="onnxruntime").runtime == "onnxruntime"
    with pytest.raises(InputError, match="runtime must be one of auto, onnxruntime, openvino, got 'tvm'"):
        Model(model_path, runtime="tvm")
    with pytest.raises(InputError, match="runtime openvino runs on the CPU"):
        Model(model_path, device="cuda", runtime="openvino")
    monkeypatch.setattr(model_module, "openvino_installed", lambda: False)
    assert Model(model_path, device="cpu").runtime == "onnxruntime"  # auto without openvino
    with pytest.raises(InputError, match=r'needs the openvino package: pip install "dmdet\[openvino\]"'):
        Model(model_path, device="cpu", runtime="openvino")


def test_openvino_runs_the_same_network_as_onnx_runtime(model_path):
    """The shipped network through OpenVINO's CPU plugin: the map of ONNX Runtime to float rounding, on blocks of
    several shapes in one model (its shapes are dynamic), from several threads at once."""
    pytest.importorskip("openvino")
    from concurrent.futures import ThreadPoolExecutor

    ov, ort = Model(model_path, device="cpu", precision="fp32"), Model(model_path, device="cpu", runtime="onnxruntime")
    assert ov.runtime == "openvino" and ort.runtime == "onnxruntime"
    assert ov.precision == ort.precision == "fp32"
    rng = np.random.default_rng(3)
    blocks = [rng.standard_normal(s).astype(np.float32) for s in [(5, 16, 24), (10, 64, 64), (3, 32, 8)]]
    for block in blocks:
        a, b = ov.run(block), ort.run(block)
        assert a.shape == block.shape and a.dtype == np.float32
        np.testing.assert_allclose(a, b, atol=2e-5)
    with ThreadPoolExecutor(3) as pool:
        maps = list(pool.map(ov.run, blocks * 2))
    for block, got in zip(blocks * 2, maps):
        np.testing.assert_allclose(got, ort.run(block), atol=2e-5)


def test_precision_is_checked_chosen_by_the_cpu_and_reported(model_path, monkeypatch):
    """auto: bf16 through OpenVINO where the CPU has it natively, fp32 otherwise; bf16 where it cannot run is
    refused with a reason; ONNX Runtime runs the model's own precision."""
    import dmdet_infer.model as model_module

    with pytest.raises(InputError, match="precision must be one of auto, fp32, bf16, got 'int8'"):
        Model(model_path, precision="int8")
    with pytest.raises(InputError, match="precision bf16 runs through OpenVINO on the CPU"):
        Model(model_path, device="cpu", runtime="onnxruntime", precision="bf16")
    assert Model(model_path, device="cpu", runtime="onnxruntime").precision == "fp32"
    if model_module.openvino_version() is None:
        return
    assert Model(model_path, device="cpu").precision == ("bf16" if model_module.openvino_bf16() else "fp32")
    assert Model(model_path, device="cpu", precision="fp32").precision == "fp32"
    monkeypatch.setattr(model_module, "openvino_bf16", lambda: False)  # a CPU without bf16
    assert Model(model_path, device="cpu").precision == "fp32"
    with pytest.raises(InputError, match="precision bf16 needs a CPU that computes it natively"):
        Model(model_path, device="cpu", precision="bf16")
    monkeypatch.setattr(model_module, "openvino_installed", lambda: False)
    with pytest.raises(InputError, match="precision bf16 runs through OpenVINO on the CPU"):
        Model(model_path, device="cpu", precision="bf16")


def test_bf16_finds_the_spots_of_fp32_on_the_example_stack():
    """Where the CPU has bf16, the shipped network's bf16 map stays within 0.01 of the fp32 one (0.006 measured on
    a 10x512x512 stack: BENCHMARKS.md), and the example stack gives the same spots within a tenth of a voxel."""
    pytest.importorskip("openvino")
    import tifffile
    from onnx_models import match_spots

    import dmdet_infer.model as model_module
    from dmdet_infer import Detector

    if not model_module.openvino_bf16():
        pytest.skip("this CPU has no native bf16 (AVX-512 BF16 or AMX)")
    volume = tifffile.imread(Path(__file__).resolve().parents[1] / "examples" / "virus_snr4.tif")
    low, full = Detector(device="cpu", precision="bf16"), Detector(device="cpu", precision="fp32")
    a, b = low.density(volume), full.density(volume)
    assert a.dtype == np.float32 and b.max() > 0.9
    assert 0 < np.abs(a - b).max() < 0.01  # really another arithmetic, and close
    x, y = low.detect(volume), full.detect(volume)
    assert (x.meta["precision"], y.meta["precision"]) == ("bf16", "fp32")
    assert len(x) == len(y) > 100 and x.meta["threshold"] == y.meta["threshold"]
    found, _, _ = match_spots(x.zyx, y.zyx, gate=0.1)
    assert len(found) == len(x)


def test_openvino_call_is_cancelled_by_cancel_runs(model_path):
    pytest.importorskip("openvino")
    import threading
    import time

    import dmdet_infer.model as model_module
    from dmdet_infer.model import cancel_runs

    model = Model(model_path, device="cpu", runtime="openvino")
    block = np.random.default_rng(0).normal(size=(32, 512, 512)).astype(np.float32)  # seconds on a CPU
    errors: list[BaseException] = []

    def call() -> None:
        try:
            model.run(block)
        except BaseException as exc:  # noqa: BLE001 (the cancelled call's error is the result)
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    while not model_module._ACTIVE and worker.is_alive():  # the call is in flight
        time.sleep(0.005)
    time.sleep(0.1)
    start = time.monotonic()
    assert cancel_runs(timeout=2.0)
    worker.join(2.0)
    assert not worker.is_alive() and time.monotonic() - start < 1.0
    assert errors and "cancelled" in str(errors[0])
    assert model.run(block[:4, :32, :32]).shape == (4, 32, 32)  # the model still works


def test_openvino_compiles_each_shape_keeps_a_few_and_only_the_last_holds_memory(model_path):
    """Each block shape gets its own static compilation; a call of another shape releases the idle ones'
    working memory, and at most KEEP shapes stay compiled (the oldest dropped), with the same map after a
    recompilation."""
    pytest.importorskip("openvino")
    model = Model(model_path, device="cpu", runtime="openvino")
    network = model.openvino
    assert network is not None
    rng = np.random.default_rng(5)
    blocks = [rng.standard_normal((4, 16 + 8 * k, 16)).astype(np.float32) for k in range(network.KEEP + 2)]
    first = model.run(blocks[0])
    for k, block in enumerate(blocks[1:], 1):
        model.run(block)
        held = [shape[2:] for shape, entry in network.compiled.items() if entry.holds_memory]
        assert held == [block.shape] and all(entry.calls == 0 for entry in network.compiled.values())
        assert len(network.compiled) == min(k + 1, network.KEEP)
    assert list(network.compiled)[-1][2:] == blocks[-1].shape and (1, 1, *blocks[0].shape) not in network.compiled
    np.testing.assert_array_equal(model.run(blocks[0]), first)
