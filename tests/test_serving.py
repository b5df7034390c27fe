"""Serving without a server: the config and its bind rule, free-text prompts to prompt sets with
the field named, batch keys, the video encoders (decoded back), policy loading, the prompt file,
and the serve config file."""

import dataclasses
import io
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from inflvg.policy import PolicyConfig, SelectionPolicy, save_policy
from inflvg.video import encode
from serving.config import ServeConfig, api_key_hash, check_bind, is_loopback
from serving.jobs import FieldError, Job, check_strategy, prompt_set_of
from serving.schema import example_scenes, request_model

REPO = Path(__file__).resolve().parent.parent
KEY = "k" * 32
FREE_TEXT = REPO / "tests" / "data" / "free_text.jsonl"


def decode(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize(("fields", "named"), [
    ({"max_batch_size": 0}, "max_batch_size"), ({"num_gpus": -1.0}, "num_gpus"), ({"device": "tpu"}, "device"),
    ({"policy": "a.pt", "model_uri": "runs:/x/policy"}, "model_uri"), ({"num_replicas": 3, "max_replicas": 2}, "max_replicas"),
    ({"max_replicas": 2.5}, "max_replicas"),
    ({"device": "cuda"}, "num_gpus"), ({"reward_num_cpus": -1}, "reward_num_cpus"), ({"generator": "wan"}, "generator"),
    ({"prompts": "no/such/prompts.jsonl"}, "prompts.*does not exist"), ({"prompts": str(REPO / "README.md")}, "prompts.*not valid JSON"),
    ({"prompts": str(FREE_TEXT), "max_scenes": 5}, "prompts.*6 scenes, more than max_scenes"),
    ({"prompts": str(FREE_TEXT), "max_prompt_chars": 60}, "prompts.*more than max_prompt_chars"),
])  # fmt: skip
def test_config_errors_name_the_field(fields, named):
    with pytest.raises(ValueError, match=named):
        ServeConfig(**fields)


def test_config_from_serve_run_strings_and_unknown_keys():
    cfg = ServeConfig.from_mapping({"max_batch_size": "4", "request_timeout_s": "2.5", "policy": "p.pt"})
    assert (cfg.max_batch_size, cfg.request_timeout_s, cfg.default_strategy) == (4, 2.5, "learned")
    with pytest.raises(ValueError, match="max_batch_size"):
        ServeConfig.from_mapping({"max_batch_size": "four"})
    with pytest.raises(ValueError, match=r"unknown ServeConfig field.*batch"):
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


def test_any_prompt_is_a_prompt_set_and_bad_ones_name_the_scene():
    free = ["A golden retriever runs across a wet lawn, face the camera", "a dragon flies", "Ünïcödé 猫 42"]
    good = example_scenes(0, 3)
    for scenes in (good, free):
        assert prompt_set_of(scenes, None, "r1").scenes == tuple(scenes)
        assert prompt_set_of(None, {str(i): p for i, p in enumerate(scenes)}, "r1") == prompt_set_of(scenes, None, "r1")
    cases = [
        ([free[0], "   "], None, "scenes[1]", "empty"),
        ([free[0], "a\x00b"], None, "scenes[1]", "control character"),
        (None, {"0": free[0], "1": "one\ttwo", "2": free[1]}, 'row["1"]', "control character"),
        (None, {"0": "line\nbreak"}, 'row["0"]', "control character"),
        ([free[0], "x\x85y"], None, "scenes[1]", "control character"),
        (None, {"0": free[0], "5": free[1]}, "row", "consecutive"),
        (None, {"1": free[0]}, "row", "consecutive"),
    ]
    for scenes, row, field, message in cases:
        with pytest.raises(FieldError, match=message) as e:
            prompt_set_of(scenes, row, "r1")
        assert e.value.field == field


def test_control_characters_are_refused_by_the_schema_naming_the_field():
    from pydantic import ValidationError

    VideoRequest = request_model(ServeConfig())
    assert VideoRequest.model_validate({"scenes": ["A cat, face the camera", "Ünïcödé 猫"]}).scenes[1] == "Ünïcödé 猫"
    for bad in ("nul\x00byte", "tab\there", "new\nline", "del\x7f", "c1\x9b"):
        with pytest.raises(ValidationError, match="control characters") as e:
            VideoRequest.model_validate({"row": {"0": "fine", "1": bad}})
        assert e.value.errors()[0]["loc"] == ("row", "1")


def test_oracle_refuses_free_text_with_a_clear_error_naming_the_strategy():
    free = prompt_set_of(["A golden retriever runs across a wet lawn, face the camera"], None, "r1")
    with pytest.raises(FieldError, match=r"oracle.*ground truth.*free text") as e:
        check_strategy("oracle", free)
    assert e.value.field == "strategy" and e.value.status == 422 and "'r1'" not in e.value.message
    check_strategy("oracle", prompt_set_of(example_scenes(0, 3), None, "r2"))  # StoryWorld's grammar: fine
    for name in ("far", "prompt_match", "learned"):
        check_strategy(name, free)


def test_prompt_file_rows_load_and_the_path_is_made_absolute(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = ServeConfig(prompts="tests/data/free_text.jsonl")
    assert cfg.prompts == str(FREE_TEXT) and ServeConfig.from_mapping({"prompts": "tests/data/free_text.jsonl"}) == cfg
    rows = cfg.prompt_sets()
    assert len(rows) == 8 and rows[0].id == "free_text-0" and rows[0].n_scenes == 6


def test_batch_keys_group_only_compatible_jobs():
    ps = prompt_set_of(example_scenes(0, 3), None, "a")

    def job(**kw):
        base = {"request_id": "a", "prompt_set": ps, "strategy": "far", "seed": 0, "frames_per_scene": 2, "budget_k": None,
                "refine_steps": 0, "scores": False, "submitted": 0.0, "deadline": 1.0}  # fmt: skip
        return Job(**{**base, **kw})

    assert job().batch_key() == job(request_id="b", scores=True).batch_key()
    # the same scene count batches, whatever the text
    assert job(prompt_set=prompt_set_of(["a cat", "a dog", "a cow"], None, "c")).batch_key() == job().batch_key()
    two_scenes = prompt_set_of(example_scenes(1, 2), None, "b")
    for other in (job(seed=1), job(frames_per_scene=3), job(budget_k=8), job(strategy="oracle"), job(prompt_set=two_scenes)):
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
    assert all(np.abs(d.astype(int) - f).mean() < tolerance for d, f in zip(decoded, big, strict=True))


def test_policy_file_loads_and_a_mismatched_one_is_refused(tmp_path):
    from serving.generator import load_serving_policy

    save_policy(SelectionPolicy(PolicyConfig()), tmp_path / "policy.pt")
    policy = load_serving_policy(ServeConfig(policy=str(tmp_path / "policy.pt")), d_feature=128, d_prompt=128)
    assert isinstance(policy, SelectionPolicy) and not policy.training
    assert load_serving_policy(ServeConfig(), d_feature=128) is None
    with pytest.raises(ValueError, match="generator width 128"):
        load_serving_policy(ServeConfig(policy=str(tmp_path / "policy.pt")), d_feature=64)
    with pytest.raises(ValueError, match="prompt width 128"):
        load_serving_policy(ServeConfig(policy=str(tmp_path / "policy.pt")), d_feature=128, d_prompt=96)


def test_serve_config_file_is_a_valid_deploy_config(monkeypatch):
    from ray.serve.schema import ServeDeploySchema

    from cluster.serve import build_app

    monkeypatch.delenv("INFLVG_API_KEY", raising=False)
    config = yaml.safe_load((REPO / "serving" / "serve_config.yaml").read_text())
    deploy = ServeDeploySchema.model_validate(config)
    app = deploy.applications[0]
    assert app.import_path == "cluster.serve:build_app" and deploy.http_options.host == app.args["host"] == "127.0.0.1"
    build_app(app.args)
    with pytest.raises(ValueError, match=r"refusing to bind 0\.0\.0\.0"):
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


@pytest.fixture(scope="module")
def replica():
    """A generator replica's class, outside Serve: the shipped backend, no policy."""
    from serving.generator import VideoGenerator

    return VideoGenerator(ServeConfig())


def test_replica_counts_unknown_words_and_turns_a_refusal_into_an_error_event(replica):
    import time

    from serving.generator import Progress

    free = prompt_set_of(["A golden retriever runs, face the camera", "a cat sleeps"], None, "r1")

    def job(**kw):
        now = time.time()
        base = {"request_id": "r1", "prompt_set": free, "strategy": "far", "seed": 0, "frames_per_scene": 2, "budget_k": None,
                "refine_steps": 0, "scores": False, "submitted": now, "deadline": now + 60}  # fmt: skip
        return Job(**{**base, **kw})

    info = replica.info()["generator"]
    assert info["name"] == "storyworld" and info["frame_shape"] == [32, 32] and info["parameters"] > 0
    [event] = replica._work([job()], Progress(time.time() + 60, 4))
    assert event["event"] == "result" and event["frames"].shape == (4, 32, 32, 3)
    unknown = [len(replica.gen.tokenizer.unknown_words(p)) for p in free.scenes]
    assert [s["unknown_words"] for s in event["scenes"]] == unknown and event["unknown_words"] == sum(unknown) > 0
    # the oracle on free text, had it got past the ingress: a clean 422 naming the field, not a crash
    [event] = replica._work([job(strategy="oracle")], Progress(time.time() + 60, 4))
    assert event["event"] == "error" and event["status"] == 422 and event["field"] == "strategy"
    assert "ground truth" in event["detail"]
    [event] = replica._work([job(strategy="learned")], Progress(time.time() + 60, 4))
    assert event["status"] == 503 and "no policy" in event["detail"]


def test_subject_tags_travel_with_the_request_and_bad_ones_name_the_field():
    scenes = ["A golden retriever runs, face the camera", "A grey cat sleeps", "The golden retriever jumps"]
    tags = ["golden retriever", "grey cat", "golden retriever"]
    assert prompt_set_of(scenes, None, "r1", tags).subjects == tuple(tags)
    for bad, message in ((tags[:2], "one tag"), (["golden retriever", "dog", None], "'dog' \\(scene 1\\) names a subject")):
        with pytest.raises(FieldError, match=message) as e:
            prompt_set_of(scenes, None, "r1", bad)
        assert e.value.field == "subjects"


def test_a_replica_serves_the_wan_backend_by_name():
    """ServeConfig(generator='wan-tiny'): latent frames in blocks of 3, non-square frames; a scene
    length that is not a multiple of the block is a 422 naming frames_per_scene."""
    import time

    from serving.generator import Progress, VideoGenerator

    wan = VideoGenerator(ServeConfig(generator="wan-tiny"))
    info = wan.info()["generator"]
    assert (info["name"], info["frame_shape"], info["frames_per_block"]) == ("wan-tiny", [64, 96], 3)
    now = time.time()
    job = Job(request_id="w", prompt_set=prompt_set_of(["A golden retriever runs", "A grey cat sleeps"], None, "w"), strategy="random",
              seed=0, frames_per_scene=None, budget_k=None, refine_steps=0, scores=False, submitted=now, deadline=now + 60)  # fmt: skip
    [event] = wan._work([job], Progress(now + 60, 6))
    assert event["event"] == "result" and event["frames"].shape == (6, 64, 96, 3)
    [event] = wan._work([dataclasses.replace(job, frames_per_scene=2)], Progress(now + 60, 4))
    assert event["status"] == 422 and event["field"] == "frames_per_scene"
