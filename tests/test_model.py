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
    model = Model(model_path, device="cpu")
    assert model.io_binding is False  # CPU: never bound
    x = np.random.default_rng(0).standard_normal((5, 16, 24)).astype(np.float32)
    plain = model.run(x)
    model.io_binding, model.bind_device = None, "cpu"
    np.testing.assert_array_equal(model.run(x), plain)
    assert model.io_binding is True and model.io_binding_error is None
    np.testing.assert_array_equal(model.run(x), plain)


def test_io_binding_failure_falls_back_to_session_run_once(model_path):
    model = Model(model_path, device="cpu")
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
