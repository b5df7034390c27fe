"""Serving without a server: the config and its bind rule, prompts to stories with the field
named, batch keys, the video encoders (decoded back), policy loading, and the serve config file."""

import io
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from inflvg.policy import PolicyConfig, SelectionPolicy, save_policy
from serving.config import ServeConfig, api_key_hash, check_bind, is_loopback
from serving.jobs import FieldError, Job, story_of
from serving.schema import example_scenes
from inflvg.video import encode

REPO = Path(__file__).resolve().parent.parent
KEY = "k" * 32


def decode(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("fields, named", [
    ({"max_batch_size": 0}, "max_batch_size"), ({"num_gpus": -1.0}, "num_gpus"), ({"device": "tpu"}, "device"),
    ({"policy": "a.pt", "model_uri": "runs:/x/policy"}, "model_uri"), ({"num_replicas": 3, "max_replicas": 2}, "max_replicas"), ({"max_replicas": 2.5}, "max_replicas"),
    ({"device": "cuda"}, "num_gpus"), ({"refiner": "cluster.refine.Refiner"}, "refiner"),
])  # fmt: skip
def test_config_errors_name_the_field(fields, named):
    with pytest.raises(ValueError, match=named):
        ServeConfig(**fields)


def test_config_from_serve_run_strings_and_unknown_keys():
    cfg = ServeConfig.from_mapping({"max_batch_size": "4", "request_timeout_s": "2.5", "policy": "p.pt"})
    assert (cfg.max_batch_size, cfg.request_timeout_s, cfg.default_strategy) == (4, 2.5, "learned")
    with pytest.raises(ValueError, match="max_batch_size"):
        ServeConfig.from_mapping({"max_batch_size": "four"})
    with pytest.raises(ValueError, match="unknown ServeConfig field.*batch"):
        ServeConfig.from_mapping({"batch": 4})


def test_api_key_required_off_loopback(monkeypatch):
    monkeypatch.delenv("INFLVG_API_KEY", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    check_bind(ServeConfig(), api_key_hash(ServeConfig()))
    for host in ("0.0.0.0", "192.0.2.1", "::"):
        with pytest.raises(ValueError, match="INFLVG_API_KEY"):
            check_bind(ServeConfig(host=host), api_key_hash(ServeConfig(host=host)))
    monkeypatch.setenv("INFLVG_API_KEY", "short")
    with pytest.raises(ValueError, match="at least 16"):
        api_key_hash(ServeConfig())
    monkeypatch.setenv("INFLVG_API_KEY", KEY)
    key_hash = api_key_hash(ServeConfig(host="0.0.0.0"))
    check_bind(ServeConfig(host="0.0.0.0"), key_hash)
    assert KEY not in key_hash  # only the hash travels to the replicas


def test_prompts_outside_the_grammar_name_the_scene():
    good = example_scenes(0, 3)
    assert story_of(good, None, 0).prompts() == good
    assert story_of(None, {str(i): p for i, p in enumerate(good)}, 0).prompts() == good
    cases = [
        ([good[0], "a dragon flies"], "scenes[1]", "cannot parse prompt"),
        (["character B jumps on the beach"], "scenes[0]", "referred to before it is described"),
        ([good[0].replace("large", "huge")], "scenes[0]", "unknown size 'huge'"),
    ]
    for scenes, field, message in cases:
        with pytest.raises(FieldError, match=message) as e:
            story_of(scenes, None, 0)
        assert e.value.field == field
    with pytest.raises(FieldError, match="consecutive") as e:
        story_of(None, {"0": good[0], "5": good[1]}, 0)
    assert e.value.field == "row"


def test_batch_keys_group_only_compatible_jobs():
    story = story_of(example_scenes(0, 3), None, 0)

    def job(**kw):
        base = dict(request_id="a", story=story, strategy="far", seed=0, frames_per_scene=2, budget_k=None,
                    refine_steps=0, scores=False, submitted=0.0, deadline=1.0)  # fmt: skip
        return Job(**{**base, **kw})

    assert job().batch_key() == job(request_id="b", scores=True).batch_key()
    for other in (job(seed=1), job(frames_per_scene=3), job(budget_k=8), job(strategy="oracle"), job(story=story_of(example_scenes(1, 2), None, 0))):
        assert other.batch_key() != job().batch_key()
    # refinement (its own policy) and random-K (one shared random stream) always run alone
    for kind in ({"refine_steps": 1}, {"strategy": "random"}):
        assert job(**kind).batch_key() != job(request_id="b", **kind).batch_key()


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
def test_encoded_video_decodes_to_the_frames(fmt):
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8), 8, axis=1).repeat(8, axis=2)  # (5, 32, 32, 3) flat 8x8 blocks
    decoded = decode(encode(frames, fmt, 8, 8))
    assert len(decoded) == 5 and decoded[0].shape == (256, 256, 3)
    big = frames.repeat(8, 1).repeat(8, 2).astype(int)
    tolerance = 12 if fmt == "mp4" else 40  # lossy H.264 / a 256-colour palette
    assert all(np.abs(d.astype(int) - f).mean() < tolerance for d, f in zip(decoded, big))


def test_policy_file_loads_and_a_mismatched_one_is_refused(tmp_path):
    from serving.generator import load_serving_policy

    save_policy(SelectionPolicy(PolicyConfig()), tmp_path / "policy.pt")
    policy = load_serving_policy(ServeConfig(policy=str(tmp_path / "policy.pt")), d_model=128)
    assert isinstance(policy, SelectionPolicy) and not policy.training
    assert load_serving_policy(ServeConfig(), d_model=128) is None
    with pytest.raises(ValueError, match="generator width 128"):
        load_serving_policy(ServeConfig(policy=str(tmp_path / "policy.pt")), d_model=64)


def test_serve_config_file_is_a_valid_deploy_config(monkeypatch):
    from ray.serve.schema import ServeDeploySchema

    from serving.app import build_app

    monkeypatch.delenv("INFLVG_API_KEY", raising=False)
    config = yaml.safe_load((REPO / "serving" / "serve_config.yaml").read_text())
    deploy = ServeDeploySchema.model_validate(config)
    app = deploy.applications[0]
    assert app.import_path == "serving.app:build_app" and deploy.http_options.host == app.args["host"] == "127.0.0.1"
    build_app(app.args)
    with pytest.raises(ValueError, match="refusing to bind 0.0.0.0"):
        build_app({**app.args, "host": "0.0.0.0"})
    monkeypatch.setenv("INFLVG_API_KEY", KEY)
    build_app({**app.args, "host": "0.0.0.0"})


def test_replicas_autoscaling_and_devices_come_from_the_config():
    from serving.app import generator_options

    fixed = generator_options(ServeConfig(num_replicas=2, max_batch_size=4))
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed and fixed["max_ongoing_requests"] >= 4
    scaling = generator_options(ServeConfig(num_replicas=1, max_replicas=4, target_ongoing_requests=6))
    assert scaling["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 6}
    assert "num_replicas" not in scaling
    gpu = generator_options(ServeConfig(device="cuda", num_gpus=0.5, num_cpus=2))
    assert gpu["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0.5}
