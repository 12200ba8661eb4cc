"""The learned camera planners (agents.planners): the torchvision-named ResNet and its weight loading, the registry and
its configs, training steps that reduce each planner's loss, DiffusionDrive's DDIM scheduler and deterministic
inference, GTRS-Dense's inference rule and vocabulary dropout, checkpoints (round trip, errors) and the checkpoint as
a policy acting in SimScale-navhard-v0."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

import agents
import agents.planners as planners
from agents.planners import (PLANNERS, PlannerPolicy, build_planner, load_planner, make_config, planner_image_size,
                             save_planner)
from agents.planners.backbone import STANDARD_WIDTHS, load_backbone_weights, make_resnet
from agents.planners.diffusiondrive import (DDIMScheduler, denormalize_xy, kmeans_anchors, normalize_xy,
                                            roll_timesteps)
from agents.planners.gtrs_dense import SCORE_HEADS, gtrs_inference_score
from simscale_env.errors import CorruptFileError, MissingFileError, SchemaError
from training.losses import compute_loss

TINY = {"image_size": (64, 32), "backbone_widths": (8, 8, 16, 16), "d_model": 32, "num_heads": 2, "ffn_dim": 64}
B = 4


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: these models are tiny, and OpenMP threads that spin on a busy 2-core machine make each op
    hundreds of times slower."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def synthetic_vocab(k: int = 48, seed: int = 0) -> np.ndarray:
    """Smooth forward trajectories [k, 40, 3] at 0.1 s."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, 41) * 0.1
    v = rng.uniform(0, 12, k)[:, None]
    yaw_rate = rng.uniform(-0.3, 0.3, k)[:, None]
    h = yaw_rate * t
    x = np.cumsum(v * np.cos(h) * 0.1, 1)
    y = np.cumsum(v * np.sin(h) * 0.1, 1)
    return np.stack([x, y, h], -1).astype(np.float32)


ANCHORS = kmeans_anchors(synthetic_vocab(64, 1)[:, 4::5], 6, seed=0)
VOCAB = synthetic_vocab()
ARRAYS = {"ltf": {}, "diffusiondrive": {"anchors": ANCHORS}, "gtrs_dense": {"vocab": VOCAB}}


def tiny(name: str, **over):
    return build_planner(name, {**TINY, **over}, **ARRAYS[name])


def make_batch(seed: int = 0, b: int = B, k: int = len(VOCAB)) -> dict:
    g = torch.Generator().manual_seed(seed)
    traj = torch.from_numpy(VOCAB[torch.randint(0, len(VOCAB), (b,), generator=g).numpy()][:, 4::5].copy())
    scores = (torch.rand(b, k, 9, generator=g) > 0.5).float()
    return {"image": torch.rand(b, 3, 32, 64, generator=g), "status": torch.randn(b, 8, generator=g),
            "trajectory": traj + 0.1 * torch.randn(b, 8, 3, generator=g), "vocab_scores": scores,
            "has_vocab_scores": torch.ones(b, dtype=torch.bool), "imitation_mask": torch.ones(b),
            "is_sim": torch.zeros(b, dtype=torch.bool), "token": [f"t{i}" for i in range(b)]}


def test_import_agents_planners_does_not_import_torch():
    code = ("import sys, agents, agents.planners as p; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'stable_baselines3' not in sys.modules, 'sb3 imported'; "
            "from agents.policy import checkpoint_formats; print(checkpoint_formats())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'simscale-planner/1 (.pt)'" in out.stdout.strip()


# ---------------------------------------------------------------------------------------------- backbone
def test_resnet_has_torchvisions_parameter_names_and_sizes():
    for arch, n_params in (("resnet18", 11_689_512), ("resnet34", 21_797_672)):  # torchvision, with fc 512x1000
        net = make_resnet(arch, STANDARD_WIDTHS, impl="own")
        assert sum(p.numel() for p in net.parameters()) == n_params - 513_000
    sd = make_resnet("resnet18", STANDARD_WIDTHS, impl="own").state_dict()
    assert len(sd) == 120  # torchvision resnet18: 122 with fc.weight, fc.bias
    shapes = {"conv1.weight": (64, 3, 7, 7), "bn1.running_var": (64,), "layer1.1.conv2.weight": (64, 64, 3, 3),
              "layer2.0.downsample.0.weight": (128, 64, 1, 1), "layer2.0.downsample.1.num_batches_tracked": (),
              "layer4.1.bn2.bias": (512,)}
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    with pytest.raises(ValueError, match="torchvision"):
        make_resnet("resnet18", (8, 8, 16, 16), impl="torchvision")


def test_load_backbone_weights_torchvision_and_wrapped_state_dicts(tmp_path):
    src = make_resnet("resnet18", (8, 8, 16, 16), impl="own")
    for p in src.parameters():
        torch.nn.init.normal_(p)
    sd = dict(src.state_dict())
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 16), torch.zeros(1000)  # as torchvision has it: ignored
    tv = tmp_path / "resnet18_tv.pth"
    torch.save(sd, tv)
    wrapped = tmp_path / "wrapped.ckpt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, wrapped)
    for path in (tv, wrapped):
        model = tiny("ltf")
        keys = load_backbone_weights(model, path)
        assert len(keys) == 120 and "fc.weight" not in keys  # the whole trunk, buffers included
        got = model.encoder.backbone.resnet.state_dict()
        assert all(torch.equal(got[k], v) for k, v in src.state_dict().items())
    # through the config: read at construction, not again when a checkpoint is loaded
    m = tiny("ltf", backbone_weights=str(tv))
    assert torch.equal(m.encoder.backbone.resnet.layer3[1].conv2.weight, src.layer3[1].conv2.weight)
    ck = save_planner(tmp_path / "c.pt", m)
    tv.unlink()
    assert torch.equal(load_planner(ck).encoder.backbone.resnet.conv1.weight, src.conv1.weight)
    # missing / unexpected keys and shape mismatches are named
    bad = dict(sd)
    bad.pop("layer1.0.conv1.weight")
    bad["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(SchemaError, match=r"missing keys: layer1\.0\.conv1\.weight.*unexpected keys: "
                                          r"layer5\.0\.conv1\.weight"):
        load_backbone_weights(tiny("ltf"), tmp_path / "bad.pt")
    torch.save(make_resnet("resnet18", (8, 8, 16, 32), impl="own").state_dict(), tmp_path / "wide.pt")
    with pytest.raises(SchemaError, match=r"shape mismatches: .*layer4\.0\.bn1\.bias \(32,\) \(expected \(16,\)\)"):
        load_backbone_weights(tiny("ltf"), tmp_path / "wide.pt")
    with pytest.raises(MissingFileError, match="backbone weights file not found"):
        load_backbone_weights(tiny("ltf"), tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_text("not torch")
    with pytest.raises(CorruptFileError, match="weights_only"):
        load_backbone_weights(tiny("ltf"), tmp_path / "junk.pt")


# ---------------------------------------------------------------------------------------------- registry, configs
def test_registry_configs_and_presets():
    assert list(PLANNERS) == ["ltf", "diffusiondrive", "gtrs_dense"]
    c = make_config("ltf", {"image_size": [256, 64], "backbone_widths": [8, 16, 32, 64]})  # JSON lists -> tuples
    assert c.image_size == (256, 64) and c.backbone_widths == (8, 16, 32, 64)
    navsim = make_config("ltf_navsim")
    assert (navsim.backbone, navsim.image_size, navsim.d_model, navsim.backbone_widths) == \
        ("resnet34", (1024, 256), 256, STANDARD_WIDTHS)
    assert make_config("ltf_navsim", {"d_model": 128}).d_model == 128  # fields over the preset
    assert make_config("gtrs_dense_navsim").query_self_attention is True
    assert planner_image_size("ltf_navsim") == (1024, 256) and planner_image_size("gtrs_dense") == (512, 128)
    assert planner_image_size("gtrs_dense", {"vocab_path": "not/read.npy", "image_size": [128, 64]}) == (128, 64)
    # the model's arrays may ride in the config dict; DiffusionDrive records its anchors' count
    dd = build_planner("diffusiondrive", {**TINY, "anchors": ANCHORS})
    assert dd.config.num_anchors == len(ANCHORS) == 6 and torch.equal(dd.anchors, torch.from_numpy(ANCHORS))
    with pytest.raises(ValueError, match=r"\['anchors'\] given both"):
        build_planner("diffusiondrive", {**TINY, "anchors": ANCHORS}, anchors=ANCHORS)
    with pytest.raises(ValueError, match=r"LTFConfig \(ltf\) has no field\(s\) \['widths'\]"):
        make_config("ltf", {"widths": 3})
    with pytest.raises(ValueError, match="unknown planner 'nope'; planners: ltf, diffusiondrive, gtrs_dense"):
        build_planner("nope")
    with pytest.raises(ValueError, match="needs anchors"):
        build_planner("diffusiondrive", TINY)
    with pytest.raises(ValueError, match="needs a trajectory vocabulary"):
        build_planner("gtrs_dense", TINY)
    with pytest.raises(ValueError, match=r"image must be \[B, 3, 32, 64\]"):
        tiny("ltf")({"image": torch.zeros(1, 3, 64, 64), "status": torch.zeros(1, 8)})
    # construction is deterministic for a seed and leaves the caller's RNG alone
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a, b = tiny("ltf"), tiny("ltf")
    assert torch.equal(torch.rand(1), before)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(tiny("ltf", seed=1).query, a.query)


def test_vocab_and_anchors_from_config_paths(tmp_path):
    np.save(tmp_path / "vocab.npy", VOCAB)
    np.save(tmp_path / "anchors.npy", np.concatenate([ANCHORS, np.zeros(ANCHORS.shape[:2] + (1,))], -1))  # [M, 8, 3]
    g = build_planner("gtrs_dense", {**TINY, "vocab_path": str(tmp_path / "vocab.npy")})
    assert torch.equal(g.vocab, torch.from_numpy(VOCAB))
    d = build_planner("diffusiondrive", {**TINY, "anchors_path": str(tmp_path / "anchors.npy")})
    assert torch.equal(d.anchors, torch.from_numpy(ANCHORS))
    np.save(tmp_path / "bad.npy", np.zeros((4, 5, 2)))
    with pytest.raises(CorruptFileError, match=r"bad\.npy: expected DiffusionDrive anchors \[M, 8, 2\|3\], got shape "
                                               r"\(4, 5, 2\)"):
        build_planner("diffusiondrive", {**TINY, "anchors_path": str(tmp_path / "bad.npy")})
    with pytest.raises(MissingFileError, match="anchors file not found"):
        build_planner("diffusiondrive", {**TINY, "anchors_path": str(tmp_path / "none.npy")})
    with pytest.raises(ValueError, match=r"multiple of 8"):
        build_planner("gtrs_dense", TINY, vocab=np.zeros((4, 30, 3)))


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("name, lr, ratio", [("ltf", 1e-2, 0.7), ("diffusiondrive", 1e-2, 0.7),
                                             ("gtrs_dense", 3e-3, 0.9)])
def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(name, lr, ratio):
    model = tiny(name).train()
    batch = make_batch()
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def loss_at(step_seed):
        if hasattr(model, "seed_generator"):
            model.seed_generator(step_seed)  # the same noise / vocabulary half every time
        out = model(batch)
        return compute_loss(name, model, batch, out)

    first, terms = loss_at(0)
    assert math.isclose(first.item(), terms["loss"], rel_tol=1e-6)
    for _ in range(15):
        loss, _ = loss_at(0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last, _ = loss_at(0)
    assert last.item() < ratio * first.item(), (first.item(), last.item())


# ---------------------------------------------------------------------------------------------- DiffusionDrive
def test_ddim_scheduler_matches_diffusers_formulas():
    s = DDIMScheduler()
    betas = np.linspace(1e-4 ** 0.5, 0.02 ** 0.5, 1000) ** 2  # scaled_linear
    ac = np.cumprod(1 - betas)
    assert np.allclose(s.alphas_cumprod.numpy(), ac, rtol=1e-5)
    x0, noise = torch.tensor([[0.5, -0.2]]), torch.tensor([[1.0, 2.0]])
    got = s.add_noise(x0, noise, torch.tensor([8]))
    assert torch.allclose(got, torch.tensor([[ac[8] ** 0.5 * 0.5 + (1 - ac[8]) ** 0.5,
                                              -0.2 * ac[8] ** 0.5 + 2 * (1 - ac[8]) ** 0.5]], dtype=torch.float32))
    sample, pred = torch.tensor([0.3]), torch.tensor([1.4])  # x0 prediction beyond the clip range
    eps = (0.3 - ac[10] ** 0.5 * 1.4) / (1 - ac[10]) ** 0.5  # epsilon from the unclipped x0, then x0 clipped to 1
    want = ac[9] ** 0.5 * 1.0 + (1 - ac[9]) ** 0.5 * eps  # float32 cancellation: compare to 1e-3
    assert abs(s.step(pred, 10, sample).item() - want) < 1e-3 * abs(want)
    assert torch.allclose(s.step(pred, 0, sample), torch.tensor([1.0]))  # alpha_prev = 1 (set_alpha_to_one)
    assert roll_timesteps(2) == [10, 0] and roll_timesteps(4) == [15, 10, 5, 0]
    xy = torch.tensor([[-1.2, -20.0], [55.7, 26.0]])
    assert torch.allclose(normalize_xy(xy), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    assert torch.allclose(denormalize_xy(normalize_xy(xy)), xy, atol=1e-5)


def test_kmeans_anchors():
    rng = np.random.default_rng(0)
    plans = np.concatenate([np.tile([[x, 0.0, 0.0]], (8, 1))[None] + rng.normal(0, .01, (5, 8, 3))
                            for x in (0.0, 10.0, 20.0)])
    a = kmeans_anchors(plans, 3, seed=0)
    assert a.shape == (3, 8, 2) and a.dtype == np.float32
    assert np.allclose(np.sort(a[:, :, 0].mean(1)), [0, 10, 20], atol=0.05)
    assert np.array_equal(a, kmeans_anchors(plans, 3, seed=0))
    with pytest.raises(ValueError, match=r"\[N, 8, 2\|3\]"):
        kmeans_anchors(plans[:, :4], 2)


def test_diffusiondrive_inference_is_deterministic_and_batch_independent():
    model = tiny("diffusiondrive").eval()
    batch = make_batch(b=3)
    p1 = model.predict(batch["image"], batch["status"])
    p2 = model.predict(batch["image"], batch["status"])
    assert torch.equal(p1, p2) and p1.shape == (3, 8, 3) and torch.isfinite(p1).all()
    single = model.predict(batch["image"][1:2], batch["status"][1:2])
    assert torch.allclose(single[0], p1[1], atol=1e-5)
    out = model(batch)
    assert out["reg"].shape == (2, 3, len(ANCHORS), 8, 3) and out["cls"].shape == (2, 3, len(ANCHORS))
    best = out["reg"][-1][torch.arange(3), out["cls"][-1].argmax(-1)]
    assert torch.equal(out["trajectory"], best)
    assert (out["trajectory"][..., 2].abs() <= math.pi).all()
    assert not torch.equal(tiny("diffusiondrive", seed=3).eval().predict(batch["image"], batch["status"]), p1)


# ---------------------------------------------------------------------------------------------- GTRS-Dense
def _np_rule(lg: dict) -> np.ndarray:
    sig = {k: 1 / (1 + np.exp(-v)) for k, v in lg.items()}
    imi = lg["imi"] - np.log(np.exp(lg["imi"]).sum(-1, keepdims=True))
    return (0.03 * imi + 0.1 * np.log(sig["tlc"]) + 0.1 * np.log(sig["nc"]) + 0.9 * np.log(sig["dac"])
            + 0.2 * np.log(sig["ddc"]) + 6 * np.log(7 * sig["ttc"] + 7 * sig["ep"] + 3 * sig["lk"]))


def test_gtrs_inference_rule_on_constructed_logits():
    # 4 trajectories: 0 unsure of DAC (logit 0), 1 likely to run a light (TLC logit -3), 2 slow (EP logit -4),
    # 3 favoured by imitation only (imi +2) but unsure of DAC (logit -0.5). Every other logit is +6.
    lg = {h: np.full((1, 4), 6.0) for h in SCORE_HEADS}
    lg["imi"] = np.array([[0.0, 0.0, 0.0, 2.0]])
    lg["dac"][0, 0], lg["tlc"][0, 1], lg["ep"][0, 2], lg["dac"][0, 3] = 0.0, -3.0, -4.0, -0.5
    score = gtrs_inference_score({k: torch.tensor(v) for k, v in lg.items()}).numpy()
    assert np.allclose(score, _np_rule(lg), atol=1e-9)
    # 0.9 log s(0) = -0.624 < 0.1 log s(-3) = -0.305: the light risk (1) beats the DAC doubt (0); 6 log(...) makes
    # the slow one (2) the worst; imitation's 0.03 cannot make up 3's DAC doubt
    assert score.argmax() == 1 and score.argmin() == 2 and score[0, 3] < score[0, 1]

    model = tiny("gtrs_dense").eval()
    batch = make_batch(b=2)
    out = model(batch)
    assert out["vocab_index"].tolist() == list(range(len(VOCAB)))
    assert torch.allclose(out["score"], gtrs_inference_score(out))
    best = out["score"].argmax(-1)
    assert torch.equal(out["trajectory"], model.vocab[best][:, 4::5])  # rows 4, 9, ..., 39
    assert torch.equal(model.predict(batch["image"], batch["status"]), out["trajectory"])
    # inference caches the vocabulary's encoding; an in-place weight change (an optimizer step) invalidates it
    with torch.no_grad():
        cached = model(batch)["score"]
        assert torch.equal(cached, out["score"]) and model._vocab_cache is not None
        model.vocab_embedding[0].weight.mul_(1.5)
        moved = model(batch)["score"]
    assert not torch.allclose(moved, cached)
    assert torch.allclose(moved, model(batch)["score"].detach(), atol=1e-5)  # grad enabled: computed afresh


def test_gtrs_vocabulary_dropout_is_seeded_and_eval_scores_all():
    model = tiny("gtrs_dense").train()
    batch = make_batch()
    model.seed_generator(7)
    i1 = model(batch)["vocab_index"]
    model.seed_generator(7)
    out = model(batch)
    assert torch.equal(out["vocab_index"], i1) and len(i1) == len(VOCAB) // 2
    assert torch.equal(i1, i1.sort().values) and len(set(i1.tolist())) == len(i1)
    assert out["imi"].shape == (B, len(VOCAB) // 2) and out["nc"].shape == (B, len(VOCAB) // 2)
    assert not torch.equal(model(batch)["vocab_index"], i1)  # the generator moves on
    assert len(tiny("gtrs_dense", vocab_keep=1.0).train()(batch)["vocab_index"]) == len(VOCAB)
    assert len(model.eval()(batch)["vocab_index"]) == len(VOCAB)


# ---------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("planner_runs")
    out = {}
    for name in PLANNERS:
        model = tiny(name).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-2)
        batch = make_batch()
        loss, _ = compute_loss(name, model, batch, model(batch))  # one step: BN statistics and weights move
        loss.backward()
        opt.step()
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].copy(),  # as training.train saves
               "python": repr(random.getstate()), "generator": np.random.default_rng(0).bit_generator.state}
        out[name] = (save_planner(root / f"run_{name}" / "checkpoint.pt", model.eval(),
                                  extra={"train": {"epoch": 1, "rng": rng}}), model)
    return out


@pytest.mark.parametrize("name", list(PLANNERS))
def test_checkpoint_round_trip_gives_identical_outputs(checkpoints, name):
    path, model = checkpoints[name]
    ck = planners.read_checkpoint(path)
    assert ck["format"] == "simscale-planner/1" and ck["planner"] == name and ck["train"]["epoch"] == 1
    assert ck["train"]["rng"]["numpy"].dtype == np.uint32 and len(ck["train"]["rng"]["numpy"]) == 624
    assert ck["config"]["image_size"] == (64, 32)
    loaded = load_planner(path)
    assert type(loaded) is type(model) and not loaded.training and loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    batch = make_batch(seed=3)
    with torch.no_grad():
        a, b = model.eval()(batch), loaded(batch)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert planners.is_planner_checkpoint(path)


def test_checkpoint_errors(tmp_path, checkpoints):
    with pytest.raises(MissingFileError, match="planner checkpoint not found"):
        load_planner(tmp_path / "none.pt")
    torch.save({"format": "other/1", "model": {}}, tmp_path / "other.pt")
    assert not planners.is_planner_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CorruptFileError, match="expected a dict with format 'simscale-planner/1', got 'other/1'"):
        load_planner(tmp_path / "other.pt")
    ck = planners.read_checkpoint(checkpoints["gtrs_dense"][0])
    ck["model"].pop("vocab")
    torch.save(ck, tmp_path / "novocab.pt")
    with pytest.raises(CorruptFileError, match=r"has no \['vocab'\] buffer"):
        load_planner(tmp_path / "novocab.pt")
    ck = planners.read_checkpoint(checkpoints["ltf"][0])
    ck["config"]["d_model"] = 64
    torch.save(ck, tmp_path / "mismatch.pt")
    with pytest.raises(CorruptFileError, match="does not fit its config"):
        load_planner(tmp_path / "mismatch.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "simscale-planner/1", "planner": "ltf", "config": {}, "model": {}, "x": Evil()},
               tmp_path / "evil.pt")
    with pytest.raises(CorruptFileError, match="weights_only"):
        load_planner(tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="reserved"):
        save_planner(tmp_path / "x.pt", checkpoints["ltf"][1], extra={"model": 1})


@pytest.fixture(scope="module")
def navhard_env(mini):
    import gymnasium as gym

    import simscale_env  # noqa: F401

    kwargs = agents.policy_env_kwargs(PlannerPolicy(tiny("ltf")))
    assert kwargs == {"observation_keys": ("cameras", "ego_status"), "cameras": ("CAM_L0", "CAM_F0", "CAM_R0")}
    env = gym.make("SimScale-navhard-v0", **kwargs)
    yield env
    env.close()


def test_checkpoints_load_as_policies_that_act_in_navhard(checkpoints, navhard_env):
    obs, info = navhard_env.reset(seed=0)
    assert obs["cameras"].shape == (3, 224, 480, 3)  # the env's default size
    for name, (path, model) in checkpoints.items():
        policy = agents.load_policy(str(path))
        assert isinstance(policy, PlannerPolicy) and policy.name == f"{name}-run_{name}"
        assert agents.policy_env_kwargs(policy)["cameras"] == ("CAM_L0", "CAM_F0", "CAM_R0")
        policy.reset(info)
        plan = policy.act(obs, info)
        assert plan.shape == (8, 3) and plan.dtype == np.float32 and np.isfinite(plan).all()
        assert (np.abs(plan[:, 2]) <= np.pi).all()
        image, status = policy.features(obs, info)
        assert np.allclose(plan, model.predict(image, status)[0].numpy(), atol=1e-6)  # the model's own plan
        assert np.array_equal(plan, policy.act(obs, info))  # deterministic (DiffusionDrive's seeded noise too)
        torch.set_num_threads(2)  # the policy acts on one thread and leaves the process's setting as it found it
        try:
            assert np.array_equal(plan, policy.act(obs, info)) and torch.get_num_threads() == 2
        finally:
            torch.set_num_threads(1)
    obs2, reward, terminated, truncated, info2 = navhard_env.step(plan)
    assert np.isfinite(reward)
