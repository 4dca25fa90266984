"""DetectorConfig: one frozen object of detection options, from the API, the command line or a JSON file."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from onnx_models import render_spots

from dmdet_infer import Detector, DetectorConfig, InputError
from dmdet_infer.cli import CONFIG_OPTIONS, FLAGS, flag_names, main
from dmdet_infer.io import read_points

TRUTH = np.array([[3.0, 10.2, 12.7], [5.4, 30.0, 40.3], [2.0, 45.6, 20.1], [6.7, 20.0, 50.5]])


def test_values_are_checked_and_normalised():
    config = DetectorConfig(threshold="AUTO", min_distance=2, tile=[4, 16, 16.0], tile_memory=2**30,
                            spot_size="1.7,1.9", split_pairs=0)
    assert config.threshold == "auto" and config.min_distance == (2.0, 2.0, 2.0) and config.tile == (4, 16, 16)
    assert config.spot_size == (1.7, 1.9, 1.9) and config.split_pairs is False and config.tile_memory == 2.0**30
    assert DetectorConfig(spot_size="0.6,0.2um").spot_size == "0.6,0.2um"  # µm: resolved per volume
    assert DetectorConfig(threshold="0.5").threshold == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.threshold = 0.5  # type: ignore[misc]
    assert hash(config) == hash(DetectorConfig.from_dict(config.to_dict()))


@pytest.mark.parametrize("options,message", [
    ({"threshold": 1.5}, "threshold must be in [0, 1)"),
    ({"threshold": "x"}, "threshold must be a number in [0, 1) or 'auto'"),
    ({"min_distance": (1, 2)}, "min_distance needs one value or three"),
    ({"refine": "magic"}, "refine must be one of"),
    ({"tile": (0, 8, 8)}, "tile needs three positive sizes Z,Y,X"),
    ({"tile_memory": 0}, "tile_memory must be positive"),
    ({"threads": -1}, "threads must be a whole number"),
    ({"device": "tpu"}, "device must be one of auto, cpu, cuda"),
    ({"spot_size": (1.0, 0.0, 1.0)}, "spot_size must be positive"),
    ({"spot_size": (1.0, -1.0, 1.0)}, "spot_size needs one value or three"),
    ({"spot_size": "a,b"}, "spot_size needs Z,XY"),
    ({"model": 3}, "model must be a path"),
])
def test_errors_name_the_parameter_and_the_cli_its_flag(options, message):
    with pytest.raises(InputError) as info:
        DetectorConfig(**options)
    assert isinstance(info.value, ValueError) and str(info.value).startswith(message), str(info.value)
    (name,) = options
    if name in FLAGS:
        assert flag_names(str(info.value)).startswith(message.replace(name, FLAGS[name], 1))


def test_json_round_trip_and_file(tmp_path):
    config = DetectorConfig(model="m.onnx", threshold=0.4, min_distance=(1, 2, 2), tile=(4, 16, 16),
                            split_pairs=False, spot_size=(1.0, 1.5, 1.5))
    text = json.dumps(config.to_dict())
    assert DetectorConfig.from_dict(json.loads(text)) == config
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "detector.json"
    path.write_text(text)
    assert DetectorConfig.from_file(path) == config.replace(model=str(tmp_path / "sub" / "m.onnx"))  # beside it
    path.write_text('{"treshold": 0.4}')
    with pytest.raises(InputError, match=r"detector.json: unknown detector option 'treshold'; the options are model"):
        DetectorConfig.from_file(path)
    path.write_text('{"threshold": 2}')
    with pytest.raises(InputError, match=r"detector.json: threshold must be in \[0, 1\)"):
        DetectorConfig.from_file(path)
    path.write_text("not json")
    with pytest.raises(InputError, match="detector.json: not a JSON config"):
        DetectorConfig.from_file(path)
    with pytest.raises(InputError, match="cannot read the config"):
        DetectorConfig.from_file(tmp_path / "none.json")


def test_detector_takes_a_config_or_the_same_keywords(pooled_model_path):
    volume = render_spots((9, 60, 64), TRUTH, seed=1)
    config = DetectorConfig(str(pooled_model_path), device="cpu", min_distance=(1, 2, 2), tile=(4, 32, 32))
    a = Detector(config=config)
    b = Detector(pooled_model_path, device="cpu", min_distance=(1, 2, 2), tile=(4, 32, 32))
    assert a.config == b.config == config
    assert (a.min_distance, a.tile, a.refine) == ((1.0, 2.0, 2.0), (4, 32, 32), "lsq")
    np.testing.assert_array_equal(a.detect(volume).zyx, b.detect(volume).zyx)
    c = Detector(a.model, config=config, refine="none")  # keywords override the config's fields
    assert c.refine == "none" and c.config == config.replace(refine="none") and c.model is a.model
    assert Detector(a.model, config=config.replace(threshold=0.3)).fixed_threshold == 0.3
    with pytest.raises(TypeError, match="unexpected keyword argument 'treshold'"):
        Detector(a.model, treshold=0.3)


def test_every_option_is_a_detector_keyword_and_its_cli_flags_come_from_the_config():
    """A new option is one field of DetectorConfig: Detector takes it, and with ``cli`` metadata the command line
    has its flag and maps its name in error messages."""
    fields = dataclasses.fields(DetectorConfig)
    params = {p.name: p for p in main.params}
    for f in fields:
        if "cli" in f.metadata:
            assert f.name in CONFIG_OPTIONS and f.name in params and FLAGS[f.name] in params[f.name].opts
    assert {f.name for f in fields} - set(CONFIG_OPTIONS) == {"threads", "overlap"}  # API only


def test_cli_config_file_and_flags_over_it(tmp_path, pooled_model_path):
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, render_spots((9, 60, 64), TRUTH, seed=2).astype(np.uint16))
    path = tmp_path / "detector.json"
    path.write_text(json.dumps({"model": str(pooled_model_path), "threshold": 0.9999, "refine": "none"}))

    def run(*args):
        out = tmp_path / "spots.csv"
        result = CliRunner().invoke(main, [str(stack), "-o", str(out), "--config", str(path), *args])
        return result, (read_points(out) if out.exists() else None)

    result, points = run()
    assert result.exit_code == 0 and "threshold 1.00" in result.output and len(points) == 0, result.output
    result, points = run("--threshold", "0.5")  # a flag given wins over the file
    expect = Detector(pooled_model_path, device="cpu", threshold=0.5, refine="none").detect(
        tifffile.imread(stack))
    assert result.exit_code == 0 and len(points) == len(expect) == len(TRUTH), result.output
    np.testing.assert_allclose(points, expect.zyx, atol=1e-3)  # refine from the file: whole voxels
    path.write_text(json.dumps({"min_distance": [1, 2]}))
    result = CliRunner().invoke(main, [str(stack), "-o", str(tmp_path / "s.csv"), "--config", str(path)])
    assert result.exit_code == 2
    assert "detector.json: --min-distance needs one value or three" in result.output, result.output
