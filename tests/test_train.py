"""Config round trip, data (normalisation, splits, crops), a tiny training run that learns, resumes and tunes."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.config import DataSpec, TrainConfig  # noqa: E402
from training.data import (  # noqa: E402
    CropSampler,
    Item,
    load_split,
    normalise,
    split_indices,
)
from training.train import load_checkpoint, train  # noqa: E402


def tiny_config(**changes) -> TrainConfig:
    values = dict(
        name="tiny", width=4, crop=(8, 32, 32), batch=2, max_steps=20, val_every=10, patience=50, threads=1,
        data=DataSpec(n_stacks=8, shape=(10, 64, 64), snr=7.0, density="high"),
    )
    values.update(changes)
    return TrainConfig(**values)


def test_config_json_round_trip(tmp_path):
    cfg = tiny_config(loss="mse", sigma_zyx=(1.0, 2.0, 2.0))
    cfg.save(tmp_path / "c.json")
    back = TrainConfig.load(tmp_path / "c.json")
    assert back == cfg and isinstance(back.data, DataSpec) and back.crop == (8, 32, 32)
    with pytest.raises(ValueError, match="data.n_stackz"):
        TrainConfig.from_dict({"data": {"n_stackz": 3}})
    with pytest.raises(ValueError, match="binary"):
        TrainConfig(loss="binary")  # binary loss needs binary targets


def test_shipped_configs_load():
    from pathlib import Path

    paths = sorted((Path(__file__).parents[1] / "training" / "configs").glob("*.json"))
    assert len(paths) >= 5
    for path in paths:
        cfg = TrainConfig.load(path)
        assert cfg.name and cfg.width > 0, path
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg, path  # nothing in the file is dropped or changed


def test_normalisation_matches_inference():
    rng = np.random.default_rng(0)
    vol = rng.poisson(10.0, size=(4, 32, 32)).astype(np.float32) * 3 + 100
    mine = normalise(vol)
    med = np.median(vol)
    assert np.allclose(mine, (vol - med) / (1.4826 * np.median(np.abs(vol - med))), atol=1e-5)
    assert not normalise(np.ones((2, 3, 3))).any()


def test_split_indices_and_reproducible_items():
    s = split_indices(8)
    assert (list(s["train"]), list(s["val"]), list(s["test"])) == ([0, 1, 2, 3], [4, 5], [6, 7])
    spec = DataSpec(n_stacks=4, shape=(4, 32, 32))
    a = load_split(spec, "val", "density")
    b = load_split(spec, "val", "density")
    assert len(a) == 1 and np.array_equal(a[0].volume, b[0].volume)
    assert a[0].target.max() <= 1.0 and a[0].meta["index"] == 2
    assert abs(float(np.median(a[0].volume))) < 1e-6


def test_parallel_loading_gives_the_same_items_in_order():
    spec = DataSpec(n_stacks=8, shape=(4, 32, 32))
    one = load_split(spec, "train", "density")
    two = load_split(spec, "train", "density", workers=2)
    assert [it.meta["index"] for it in two] == [0, 1, 2, 3]
    assert all(np.array_equal(x.volume, y.volume) and np.array_equal(x.target, y.target)
               and np.array_equal(x.positions, y.positions) for x, y in zip(one, two))


def test_checkpoints_hold_cpu_tensors_and_devices_resolve():
    import torch

    from training.train import build_model, cpu_state, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    state = cpu_state(build_model(TrainConfig(width=2)))
    assert state and all(v.device.type == "cpu" for v in state.values())


def test_cache_gives_same_items(tmp_path):
    spec = DataSpec(n_stacks=4, shape=(4, 32, 32), cache_dir=str(tmp_path))
    first = load_split(spec, "train", "binary")
    again = load_split(spec, "train", "binary")  # read back from the cache
    assert len(list(tmp_path.rglob("*.npz"))) == 2
    assert all(np.array_equal(x.volume, y.volume) and np.array_equal(x.positions, y.positions)
               for x, y in zip(first, again))


def test_crop_sampler_keeps_input_and_target_aligned():
    vol = np.arange(6 * 16 * 16, dtype=np.float32).reshape(6, 16, 16)
    item = Item(vol, vol * 2, np.zeros((0, 3)), {})
    sampler = CropSampler([item], (4, 8, 8), 16, np.random.default_rng(0))
    x, y = sampler.sample()
    assert x.shape == (16, 1, 4, 8, 8) and torch.equal(y, 2 * x)
    # flips/transposes happen: some crops are not increasing along x
    assert (x[:, 0, 0, 0, 1] < x[:, 0, 0, 0, 0]).any()
    with pytest.raises(ValueError, match="larger"):
        CropSampler([item], (8, 8, 8), 1, np.random.default_rng(0))


def test_training_smoke_learns_resumes_and_tunes(tmp_path):
    cfg = tiny_config()
    out = tmp_path / "run"
    summary = train(cfg, out, progress=False)
    log = json.loads((out / "log.json").read_text())
    hist = log["history"]
    assert [h["step"] for h in hist] == [10, 20]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]  # the loss decreases
    for name in ("best.pt", "last.pt", "loss_curve.png", "config.json"):
        assert (out / name).exists()
    best = load_checkpoint(out / "best.pt")
    assert 0.0 < best["threshold"] < 1.0 and best["threshold"] == summary["threshold"]
    assert best["val_scores"]["n"] == 2 and "f1_mean" in best["val_scores"]
    assert best["halo"] == [15, 36, 36] and best["stride"] == [1, 4, 4]

    # resume: continues from step 20 with the saved optimiser and rng state
    last = load_checkpoint(out / "last.pt")
    assert last["step"] == 20
    cfg.max_steps = 30
    train(cfg, out, progress=False)
    hist2 = json.loads((out / "log.json").read_text())["history"]
    assert [h["step"] for h in hist2] == [10, 20, 30]
    assert load_checkpoint(out / "last.pt")["step"] == 30

    # a checkpoint written before a config key existed resumes, the key counting at its default
    ck = load_checkpoint(out / "last.pt")
    del ck["config"]["teacher_floor"], ck["config"]["data"]["split_stacks"]
    torch.save(ck, out / "last.pt")
    cfg.max_steps = 40
    train(cfg, out, progress=False)
    assert load_checkpoint(out / "last.pt")["step"] == 40

    # a changed config is refused, --restart starts over
    with pytest.raises(ValueError, match="different config"):
        train(tiny_config(width=8, max_steps=30), out, progress=False)


def test_keep_checkpoints_keeps_each_validations_checkpoint(tmp_path):
    cfg = tiny_config(max_steps=4, val_every=2, keep_checkpoints=True, data=DataSpec(n_stacks=4, shape=(10, 32, 32)))
    train(cfg, tmp_path / "run", progress=False)
    kept = sorted(p.name for p in (tmp_path / "run").glob("step-*.pt"))
    assert kept == ["step-000002.pt", "step-000004.pt"]
    assert [load_checkpoint(tmp_path / "run" / name)["step"] for name in kept] == [2, 4]
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    for key, value in load_checkpoint(tmp_path / "run" / kept[-1])["model"].items():
        assert torch.equal(value, last["model"][key]), key
    train(tiny_config(max_steps=4, val_every=2, data=DataSpec(n_stacks=4, shape=(10, 32, 32))), tmp_path / "b",
          progress=False)
    assert not list((tmp_path / "b").glob("step-*.pt"))  # off by default


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    straight = tiny_config(max_steps=6, val_every=3, data=DataSpec(n_stacks=4, shape=(10, 32, 32)))
    train(straight, tmp_path / "a", progress=False)
    first = tiny_config(max_steps=3, val_every=3, data=DataSpec(n_stacks=4, shape=(10, 32, 32)))
    train(first, tmp_path / "b", progress=False)
    first.max_steps = 6
    train(first, tmp_path / "b", progress=False)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for key in a["model"]:
        assert torch.allclose(a["model"][key].float(), b["model"][key].float(), atol=1e-5), key


def test_frozen_norms_train_as_the_exported_operator():
    from training.network import DetNet3D, fold_norms, freeze_norms

    net = DetNet3D(width=4)
    for m in net.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.InstanceNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    freeze_norms(net)
    net.train()
    x = torch.randn(2, 1, 4, 16, 16)
    out = net(x)
    out.mean().backward()
    assert all(torch.equal(before[k], net.state_dict()[k]) for k in before)  # statistics never move
    with torch.no_grad():
        assert torch.allclose(out, fold_norms(net)(x), atol=1e-6)  # training output == exported operator
    assert all(p.grad is not None for p in net.parameters())


def test_online_sampler_draws_fresh_reproducible_stacks_outside_the_pool():
    from training.data import OnlineSampler, simulate_item

    spec = DataSpec(n_stacks=8, shape=(10, 64, 64), online=True)
    a = OnlineSampler(spec, "density", (1.0, 1.5, 1.5), (8, 32, 32), 3, np.random.default_rng(0))
    xa, ya = a.sample()
    assert a.position == 3 and xa.shape == (3, 1, 8, 32, 32) and float(ya.max()) <= 1.0
    b = OnlineSampler(spec, "density", (1.0, 1.5, 1.5), (8, 32, 32), 3, np.random.default_rng(0))
    xb, _ = b.sample()
    assert torch.equal(xa, xb)  # reproducible
    resumed = OnlineSampler(spec, "density", (1.0, 1.5, 1.5), (8, 32, 32), 3, np.random.default_rng(0), position=3)
    assert resumed.position == 3
    pool = {simulate_item(spec, i)[0].tobytes() for i in range(spec.n_stacks)}
    assert simulate_item(spec, spec.n_stacks + 0)[0].tobytes() not in pool
    with pytest.raises(ValueError, match="online"):
        TrainConfig(data=DataSpec(source="annotations", folder="x", online=True))


def test_frozen_online_training_runs_and_resumes(tmp_path):
    cfg = tiny_config(norm="frozen", max_steps=4, val_every=2,
                      data=DataSpec(n_stacks=4, shape=(10, 64, 64), online=True))
    train(cfg, tmp_path / "run", progress=False)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["sampler_position"] == 4 * cfg.batch
    cfg.max_steps = 6
    train(cfg, tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["sampler_position"] == 6 * cfg.batch


def test_distillation_targets_are_the_teachers_output(tmp_path):
    """With teacher_weight 1 the target is the teacher's map: a student starting as the teacher, in the teacher's
    exported mode (frozen norms), has zero loss (up to rounding) on its first steps; with weight 0 the annotated
    target returns."""
    cfg = tiny_config(stem=True, norm="frozen", max_steps=2, val_every=2, crop=(8, 32, 32),
                      data=DataSpec(n_stacks=4, shape=(10, 64, 64), snr=7.0, density="high"))
    train(cfg, tmp_path / "teacher", progress=False, final_tuning=False)
    teacher = str(tmp_path / "teacher" / "best.pt")
    cfg.lr = 0.0  # the student stays the teacher: every step's loss is its loss against the teacher
    cfg.init_from = teacher
    cfg.teacher, cfg.teacher_weight = teacher, 1.0
    train(cfg, tmp_path / "student", progress=False, final_tuning=False)
    # zero up to rounding: on the CPU student and teacher run channels-last kernels that may sum in another order
    assert load_checkpoint(tmp_path / "student" / "last.pt")["history"][-1]["train_loss"] < 1e-9
    cfg.teacher_weight = 0.0
    train(cfg, tmp_path / "annotated", progress=False, final_tuning=False)
    assert load_checkpoint(tmp_path / "annotated" / "last.pt")["history"][-1]["train_loss"] > 0.01
    with pytest.raises(ValueError, match="teacher_weight"):
        tiny_config(teacher=teacher, teacher_weight=1.5)


def test_precomputed_teacher_maps_are_blended_into_the_training_targets(tmp_path):
    from training.data import Item
    from training.network import DetNet3D
    from training.train import distilled, predict

    rng = np.random.default_rng(0)
    items = [Item(rng.normal(size=(6, 16, 16)).astype(np.float32), rng.random((6, 16, 16)).astype(np.float32),
                  np.zeros((0, 3)), {}) for _ in range(2)]
    net = DetNet3D(width=4).eval()
    with torch.no_grad():
        assert np.allclose(distilled(items, net, 1.0)[0].target, predict(net, items[0].volume), atol=1e-6)
        assert np.array_equal(distilled(items, net, 0.0)[1].target, items[1].target)
        v = items[1].volume
        mean = (predict(net, v) + predict(net, v[:, :, ::-1].copy())[:, :, ::-1]
                + predict(net, v[:, ::-1].copy())[:, ::-1] + predict(net, v[:, ::-1, ::-1].copy())[:, ::-1, ::-1]) / 4
        half = distilled(items, net, 0.5, flips=True)[1].target
        assert np.allclose(half, 0.5 * items[1].target + 0.5 * mean, atol=1e-6)
        floored = distilled(items, net, 0.5, floor=True)[0].target
        blend = distilled(items, net, 0.5)[0].target
        assert np.array_equal(floored, np.maximum(blend, items[0].target))
        assert (floored >= items[0].target).all() and (floored > blend).any()
    # in training: a teacher's precomputed maps, and the run trains without a teacher pass per step
    cfg = tiny_config(norm="frozen", max_steps=2, val_every=2, data=DataSpec(n_stacks=4, shape=(10, 64, 64),
                                                                              snr=7.0, density="high"))
    train(cfg, tmp_path / "teacher", progress=False, final_tuning=False)
    cfg.teacher, cfg.teacher_precompute, cfg.teacher_flips = str(tmp_path / "teacher" / "best.pt"), True, True
    train(cfg, tmp_path / "student", progress=False, final_tuning=False)
    assert np.isfinite(load_checkpoint(tmp_path / "student" / "last.pt")["history"][-1]["train_loss"])
    with pytest.raises(ValueError, match="teacher_precompute"):
        tiny_config(teacher_precompute=True)
    with pytest.raises(ValueError, match="teacher_precompute"):
        tiny_config(teacher="t.pt", teacher_precompute=True, data=DataSpec(online=True))


def test_teacher_on_plain_blends_only_stacks_whose_background_is_noise():
    from training.data import Item
    from training.network import DetNet3D
    from training.train import distilled, plain_background, predict

    rng = np.random.default_rng(3)
    metas = [{"params": {"snr": 2.0}}, {"generator": "microscopy", "params": {"texture": 0.0, "n_blobs": 0,
                                                                              "hot_pixels": 0, "n_cells": 3}},
             {"generator": "microscopy", "params": {"texture": 0.4, "n_blobs": 0, "hot_pixels": 0}},
             {"generator": "microscopy", "params": {"texture": 0.0, "n_blobs": 2, "hot_pixels": 0}},
             {"generator": "microscopy", "params": {"texture": 0.0, "n_blobs": 0, "hot_pixels": 5}}]
    items = [Item(rng.normal(size=(6, 16, 16)).astype(np.float32), rng.random((6, 16, 16)).astype(np.float32),
                  np.zeros((0, 3)), m) for m in metas]
    assert [plain_background(i) for i in items] == [True, True, False, False, False]
    net = DetNet3D(width=4).eval()
    with torch.no_grad():
        out = distilled(items, net, 1.0, on="plain")
        for item, o, plain in zip(items, out, [True, True, False, False, False]):
            assert np.allclose(o.target, predict(net, item.volume), atol=1e-6) if plain else \
                np.array_equal(o.target, item.target)
    with pytest.raises(ValueError, match="teacher_on"):
        tiny_config(teacher_on="some")
    with pytest.raises(ValueError, match="teacher_precompute"):
        tiny_config(teacher="t.pt", teacher_on="plain")


def test_teacher_maps_are_kept_in_the_cache_dir_and_reused_only_when_everything_matches(tmp_path):
    from training.data import Item
    from training.network import DetNet3D
    from training.train import cached_distilled, cpu_state, distilled, teacher_cache_path

    rng = np.random.default_rng(2)
    items = [Item(rng.normal(size=(6, 16, 16)).astype(np.float32), rng.random((6, 16, 16)).astype(np.float32),
                  np.zeros((0, 3)), {}) for _ in range(3)]
    net = DetNet3D(width=4).eval()
    teacher = tmp_path / "t.pt"
    torch.save({"model": cpu_state(net)}, teacher)
    cfg = tiny_config(teacher=str(teacher), teacher_weight=0.5,
                      data=DataSpec(n_stacks=8, shape=(10, 64, 64), cache_dir=str(tmp_path / "cache")))
    fresh = cached_distilled(items, net, cfg)
    path = teacher_cache_path(items, cfg)
    assert path is not None and path.exists() and not list(path.parent.glob(".*tmp"))
    with mock.patch("training.train.distilled", side_effect=AssertionError("recomputed")):
        again = cached_distilled(items, net, cfg)  # read back, not recomputed
    for a, b, c in zip(fresh, again, distilled(items, net, 0.5)):
        assert np.array_equal(a.target, b.target) and np.array_equal(a.target, c.target)
    cfg.teacher_weight = 0.25  # another blend, another input or another teacher: another file
    assert teacher_cache_path(items, cfg) != path
    cfg.teacher_weight = 0.5
    cfg.teacher_on, cfg.teacher_precompute = "plain", True
    assert teacher_cache_path(items, cfg) != path
    cfg.teacher_on = "all"
    assert teacher_cache_path(items, cfg) == path
    items[0].volume[0, 0, 0] += 1.0
    assert teacher_cache_path(items, cfg) != path
    cfg.data.cache_dir = None
    assert teacher_cache_path(items, cfg) is None


def test_batched_prediction_equals_one_volume_at_a_time_in_order():
    from training.network import DetNet3D
    from training.train import predict, predict_many

    rng = np.random.default_rng(1)
    shapes = [(6, 20, 16)] * 3 + [(5, 16, 16)] * 2 + [(6, 20, 16)]  # runs of one shape, padded to the stride
    volumes = [rng.normal(size=s).astype(np.float32) for s in shapes]
    net = DetNet3D(width=4).eval()
    with torch.no_grad():
        for flips in (False, True):
            one = [predict(net, v, flips) for v in volumes]
            for batch in (1, 2, 4):
                many = predict_many(net, volumes, flips, batch=batch)
                assert [m.shape for m in many] == shapes
                assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(one, many))
    assert predict_many(net, []) == []
    assert torch.is_grad_enabled()  # called where autograd records (as finalise is): no graph, plain arrays
    assert np.allclose(predict_many(net, volumes[:2])[1], predict(net, volumes[1]), atol=1e-5)


def test_flip_averaging_teacher_averages_the_maps_of_the_four_yx_flips():
    from training.network import DetNet3D
    from training.train import teacher_map

    x = torch.randn(2, 1, 6, 16, 16)
    identity = torch.nn.Identity()  # flip-equivariant: every flipped-back map is the input itself
    assert torch.allclose(teacher_map(identity, x, flips=True), x)
    net = DetNet3D(width=4).eval()
    with torch.no_grad():
        mean = (net(x) + net(x.flip(4)).flip(4) + net(x.flip(3)).flip(3) + net(x.flip((3, 4))).flip((3, 4))) / 4
        assert torch.allclose(teacher_map(net, x, flips=True), mean, atol=1e-6)
        assert torch.equal(teacher_map(net, x), net(x))
        assert not torch.allclose(mean, net(x), atol=1e-6)  # a random network is not flip-equivariant


def test_partial_init_warm_starts_a_stem_network_from_a_plain_one(tmp_path):
    from training.network import DetNet3D
    from training.train import matching_state

    plain, stem = DetNet3D(width=4), DetNet3D(width=4, stem=True)
    state = matching_state(stem, plain.state_dict())
    stem.load_state_dict(state)
    new = stem.state_dict()
    copied = [k for k in new if k in plain.state_dict() and plain.state_dict()[k].shape == new[k].shape]
    assert len(copied) >= 0.8 * len(new) and all(torch.equal(new[k], plain.state_dict()[k]) for k in copied)
    assert any(k.startswith("entry.") for k in new) and not any(k.startswith("entry.") for k in copied)
    assert plain.state_dict()["encoders.0.layers.0.0.weight"].shape != new["encoders.0.layers.0.0.weight"].shape


def test_sliced_init_gives_a_narrower_network_the_leading_channels_of_a_wider_one():
    from training.network import DetNet3D
    from training.train import matching_state

    wide, narrow = DetNet3D(width=8), DetNet3D(width=6, stem=True)
    src = wide.state_dict()
    assert matching_state(narrow, src)["head.weight"].shape == (1, 6, 1, 1, 1)  # without slicing: kept random
    state = matching_state(narrow, src, leading=True)
    narrow.load_state_dict(state)
    own = narrow.state_dict()
    sliced = [k for k in own if k in src and own[k].shape != src[k].shape
              and torch.equal(own[k], src[k][tuple(slice(0, n) for n in own[k].shape)])]
    assert "head.weight" in sliced and "encoders.2.layers.1.0.weight" in sliced
    assert torch.equal(own["encoders.1.layers.0.0.weight"], src["encoders.1.layers.0.0.weight"][:12, :6])
    # the stem's first trunk conv takes 6 channels where the plain one takes the image: not sliced, random
    assert not torch.equal(own["encoders.0.layers.0.0.weight"][:, :1], src["encoders.0.layers.0.0.weight"][:6])
    assert len(sliced) >= 0.6 * len(own)


def test_cli_init_from_starts_from_the_given_weights(tmp_path):
    from click.testing import CliRunner

    from training.__main__ import main

    cfg = tiny_config(max_steps=2, val_every=2, data=DataSpec(n_stacks=4, shape=(10, 32, 32)))
    train(cfg, tmp_path / "base", progress=False)
    cfg.max_steps = 0
    cfg.save(tmp_path / "ft.json")
    result = CliRunner().invoke(main, ["train", "--config", str(tmp_path / "ft.json"), "--out", str(tmp_path / "ft"),
                                       "--init-from", str(tmp_path / "base" / "best.pt")])
    assert result.exit_code == 0, result.output
    base, ft = load_checkpoint(tmp_path / "base" / "best.pt"), load_checkpoint(tmp_path / "ft" / "best.pt")
    assert ft["config"]["init_from"] == str(tmp_path / "base" / "best.pt")
    assert all(torch.equal(base["model"][k], ft["model"][k]) for k in base["model"])


def test_cli_set_overrides_config_values_and_pool_fills_the_cache(tmp_path):
    from click.testing import CliRunner

    from training.__main__ import main

    cfg = tiny_config(max_steps=2, val_every=2, data=DataSpec(n_stacks=4, shape=(10, 32, 32)))
    cfg.save(tmp_path / "c.json")
    cache = tmp_path / "cache"
    runner = CliRunner()
    result = runner.invoke(main, ["pool", "--config", str(tmp_path / "c.json"), "--workers", "1",
                                  "--set", f"data.cache_dir={cache}"])
    assert result.exit_code == 0, result.output
    assert len(list(cache.rglob("*.npz"))) == 4
    result = runner.invoke(main, ["train", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "run"),
                                  "--no-final-tuning", "--set", "lr=2e-4", "--set", "norm=frozen",
                                  "--set", f"data.cache_dir={cache}", "--set", "data.density=[50, 3000]"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["lr"] == 2e-4 and saved["norm"] == "frozen" and saved["data"]["density"] == [50, 3000]
    assert saved["data"]["cache_dir"] == str(cache)
    for bad in ("bogus=1", "data.bogus=1", "lr", "norm=batch"):
        result = runner.invoke(main, ["train", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "x"),
                                      "--set", bad])
        assert result.exit_code == 2 and "--set" in result.output, (bad, result.output)


def test_finalise_cpu_tunes_the_threshold_as_finalise_does(tmp_path):
    """training.finalise_cpu (ONNX Runtime) stores the threshold that training's own finalise (PyTorch) chose."""
    from training.finalise_cpu import finalise_cpu

    cfg = tiny_config(max_steps=10, val_every=10)
    out = tmp_path / "run"
    summary = train(cfg, out, progress=False)
    dest = tmp_path / "shipped.pt"
    result = finalise_cpu(out / "best.pt", dest, workers=1)
    ck = load_checkpoint(dest)
    assert "optimizer" not in ck and ck["total_steps"] == 10 and result["precision"] == "fp32"
    assert ck["threshold"] == result["threshold"] == pytest.approx(summary["threshold"], abs=0.021)
    assert ck["val_scores"]["f1_mean"] == pytest.approx(summary["val_scores"]["f1_mean"], abs=0.05)


def _checkpoint(path, width: int = 4, seed: int = 0) -> dict:
    from training.network import DetNet3D
    from training.train import save_atomic

    torch.manual_seed(seed)
    ck = {"model": DetNet3D(width=width).state_dict(), "config": TrainConfig(width=width).to_dict(), "step": seed,
          "threshold": 0.5, "optimizer": {"state": {}}, "finalised": "yes"}
    save_atomic(ck, path)
    return ck


def test_interpolation_mixes_every_weight_keeps_counters_and_refuses_other_architectures(tmp_path):
    """training.interpolate: (1 - alpha) base + alpha tuned per weight, a network that runs, clear errors."""
    from click.testing import CliRunner

    from training.interpolate import interpolate, main
    from training.train import build_model

    base, tuned = _checkpoint(tmp_path / "a.pt", seed=1), _checkpoint(tmp_path / "b.pt", seed=2)
    for alpha in (0.0, 0.25, 1.0):
        mix = interpolate(tmp_path / "a.pt", tmp_path / "b.pt", alpha, tmp_path / "mix.pt")
        assert load_checkpoint(tmp_path / "mix.pt")["interpolated"]["alpha"] == alpha
        for name, value in mix["model"].items():
            if torch.is_floating_point(value):
                want = (1 - alpha) * base["model"][name] + alpha * tuned["model"][name]
                assert torch.allclose(value, want, atol=1e-6), name
            else:
                assert torch.equal(value, tuned["model"][name]), name
    assert "optimizer" not in mix and "finalised" not in mix and mix["config"]["name"].endswith("-wise1")
    net = build_model(TrainConfig.from_dict(mix["config"]))
    net.load_state_dict(mix["model"])
    assert net.eval()(torch.zeros(1, 1, 8, 32, 32)).shape == (1, 1, 8, 32, 32)
    _checkpoint(tmp_path / "wide.pt", width=8)
    result = CliRunner().invoke(main, [str(tmp_path / "a.pt"), str(tmp_path / "wide.pt"), "--alpha", "0.5",
                                       "-o", str(tmp_path / "bad.pt")])
    assert result.exit_code == 1 and "config width differs: 4 against 8" in result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "bad.pt").exists()


def test_teacher_maps_of_the_exported_network_equal_torch_and_are_used_on_the_cpu(tmp_path):
    """On a CPU the precomputed teacher maps come from the exported network (ExportedNetwork), which gives the
    torch teacher's maps, flips included."""
    from training.data import Item
    from training.train import ExportedNetwork, distilled, model_from_checkpoint

    cfg = tiny_config(norm="frozen", max_steps=2, val_every=2, data=DataSpec(n_stacks=4, shape=(10, 64, 64),
                                                                              snr=7.0, density="high"))
    train(cfg, tmp_path / "teacher", progress=False, final_tuning=False)
    checkpoint = tmp_path / "teacher" / "best.pt"
    net = model_from_checkpoint(checkpoint)[0]
    rng = np.random.default_rng(4)
    items = [Item(rng.normal(size=(6, 20, 28)).astype(np.float32), rng.random((6, 20, 28)).astype(np.float32),
                  np.zeros((0, 3)), {}) for _ in range(2)]
    with ExportedNetwork(checkpoint) as fast, torch.no_grad():
        for flips in (False, True):
            for a, b in zip(distilled(items, fast, 0.5, flips), distilled(items, net, 0.5, flips)):
                assert a.target.shape == b.target.shape and np.allclose(a.target, b.target, atol=1e-5)
    cfg.teacher, cfg.teacher_precompute = str(checkpoint), True
    with mock.patch("training.train.ExportedNetwork.map", autospec=True,
                    side_effect=lambda self, v, flips=False: np.zeros_like(v)) as used:
        train(cfg, tmp_path / "student", progress=False, final_tuning=False)
    assert used.called
