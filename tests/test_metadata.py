import json

import pytest
from onnx_models import default_info

from dmdet_infer.metadata import FORMAT_VERSION, ModelInfo, from_props, to_props


def test_round_trip_keeps_every_field():
    info = default_info(voxel_size_um=(0.3, 0.1, 0.1), validation_scores={"f1": 0.97}, config={"width": 8})
    props = to_props(info)
    assert all(k.startswith("dmdet.") for k in props)
    assert json.loads(props["dmdet.stride_zyx"]) == [1, 1, 1]
    assert from_props(props) == info


def test_missing_keys_are_named():
    props = to_props(default_info())
    del props["dmdet.threshold"], props["dmdet.kind"]
    with pytest.raises(ValueError, match="dmdet.kind, dmdet.threshold"):
        from_props(props)


def test_bad_json_and_values_are_refused():
    props = to_props(default_info())
    props["dmdet.halo_zyx"] = "[1, 2"
    with pytest.raises(ValueError, match="dmdet.halo_zyx is not valid JSON"):
        from_props(props)
    with pytest.raises(ValueError, match="kind"):
        default_info(kind="segmentation")
    with pytest.raises(ValueError, match="normalisation"):
        default_info(normalisation={"method": "zscore"})
    with pytest.raises(ValueError, match="stride"):
        default_info(stride_zyx=(0, 4, 4))


def test_newer_format_is_refused_and_unknown_keys_ignored():
    props = to_props(default_info())
    props["dmdet.some_future_key"] = "1"
    assert from_props(props).kind == "density"
    props["dmdet.format_version"] = str(FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match="newer"):
        from_props(props)


def test_modelinfo_is_hashable_value_object():
    assert isinstance(default_info(), ModelInfo)


@pytest.mark.parametrize("key, value", [
    ("stride_zyx", '"abc"'), ("halo_zyx", "null"), ("threshold", "[0.5]"), ("threshold", "NaN"),
    ("threshold", "1.5"), ("noise_peaks", "[1, 2]"), ("normalisation", '"local"'), ("sigma_zyx", '[1, "x", 2]'),
    ("spot_sigma_range_zyx", "[[1, 2]]"), ("config", "3"), ("noise_peaks", '{"thresholds": "x"}'),
    ("min_distance_zyx", "null"),  # found by tests/test_fuzz.py: a TypeError traceback when the Detector was made
    ("sigma_zyx", "[0, 0, 0]"),  # found by tests/test_fuzz.py: ZeroDivisionError (exit 1) in pairs.shape_features
    ("stride_zyx", "[1000, 1000, 1000]"),  # every stack padded to 1e9 voxels: std::bad_alloc, exit 1
    ("normalisation", '{"method": "percentile", "low": 99, "high": 1}'),  # read every stack as constant: 0 spots
])
def test_malformed_values_are_refused_naming_the_key(key, value):
    """Issue 16 item 5: each of these gave a traceback; now a ValueError that names the key."""
    props = to_props(default_info())
    props["dmdet." + key] = value
    with pytest.raises(ValueError, match=key):
        from_props(props)


def test_a_model_with_malformed_metadata_is_refused_in_one_line(tmp_path):
    import onnx
    from click.testing import CliRunner
    from onnx_models import render_spots

    from dmdet_infer.cli import main
    from dmdet_infer.model import default_model_path

    model = onnx.load(str(default_model_path()))
    for prop in model.metadata_props:
        if prop.key == "dmdet.halo_zyx":
            prop.value = "null"
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    import numpy as np
    import tifffile

    stack = tmp_path / "s.tif"
    tifffile.imwrite(stack, render_spots((8, 32, 32), np.array([[3.0, 10.0, 12.0]])).astype(np.uint16))
    result = CliRunner().invoke(main, [str(stack), "-o", str(tmp_path / "s.csv"), "--model", str(bad)])
    assert result.exit_code == 2, result.output
    assert "halo_zyx" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
