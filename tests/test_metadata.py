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
