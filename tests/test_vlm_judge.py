"""VLM artifact judge: a tiny random LLaVA saved as a real checkpoint folder, loaded offline."""

import numpy as np
import pytest
import torch

from inflvg.config import WorldConfig
from inflvg.world import render_story, sample_story
from reward_actors.types import SceneBatch
from reward_actors.vlm_judge import DEFAULT_QUESTION, VLMJudge

WORDS = ["[PAD]", "[UNK]", "<image>", "yes", "no", "Yes", "No", "Answer", "answer", ":", "?", ".", ","]


def save_tiny_llava(folder) -> None:
    """A random LLaVA (CLIP vision 32 px / patch 8 -> 16 image tokens, Llama hidden 32, 1 layer each),
    a WordLevel tokenizer over the question's words, a CLIP image processor and a LlavaProcessor
    with a plain (chat-free) prompt, all written with ``save_pretrained`` as a real checkpoint is."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    words = WORDS + sorted({w.strip("?,.") for w in DEFAULT_QUESTION.split()} - set(WORDS))
    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", extra_special_tokens={"image_token": "<image>"}
    )
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        images, tokenizer, patch_size=8, vision_feature_select_strategy="default", num_additional_image_tokens=1, image_token="<image>"
    )
    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8, projection_dim=32
    )
    text = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        vocab_size=len(vocab), pad_token_id=0, max_position_embeddings=128,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=vocab["<image>"], vision_feature_layer=-1,
        vision_feature_select_strategy="default", image_seq_length=16,
    )  # fmt: skip
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("tiny-llava")
    save_tiny_llava(folder)
    return folder


@pytest.fixture(scope="module")
def judge(checkpoint):
    return VLMJudge(str(checkpoint))


@pytest.fixture(scope="module")
def scenes():
    """8 StoryWorld scenes of (4, 32, 32, 3) frames and their prompts."""
    world = WorldConfig()
    story = sample_story(0, "train", world.n_scenes, world.cast_size)
    frames = render_story(story, world).frames.reshape(world.n_scenes, world.frames_per_scene, 32, 32, 3)
    return SceneBatch(list(frames), story.prompts())


def test_scores_are_probabilities_deterministic_and_batch_invariant(judge, scenes):
    first, second = judge.score(scenes), judge.score(scenes)
    assert first.valid.all() and first.reasons == [None] * len(scenes)
    assert np.isfinite(first.scores).all() and ((first.scores >= 0) & (first.scores <= 1)).all()
    np.testing.assert_array_equal(first.scores, second.scores)
    alone = np.array([judge.score(scenes.subset([i])).scores[0] for i in range(len(scenes))])
    np.testing.assert_allclose(first.scores, alone, atol=1e-5, rtol=0)
    assert first.model == "llava:" + judge.name.split(":", 1)[1] and len(first.version) == 12
    assert first.counts == {"frames_judged": 4 * len(scenes), "scenes_masked": 0}


def test_chunked_forward_passes_and_frame_sampling_match(checkpoint, judge, scenes):
    chunked = VLMJudge(str(checkpoint), max_images=6)  # 8 scenes x 4 frames -> 8 passes of <= 6 images
    assert chunked.version == judge.version and chunked.name == judge.name
    np.testing.assert_allclose(chunked.score(scenes).scores, judge.score(scenes).scores, atol=1e-5, rtol=0)
    two = VLMJudge(str(checkpoint), frames_per_scene=2).score(scenes)
    assert two.valid.all() and two.counts["frames_judged"] == 2 * len(scenes)


def test_failing_scene_is_masked_not_made_up(judge, scenes, monkeypatch):
    good = judge.score(scenes)
    frames = list(scenes.frames)
    frames[3] = np.zeros_like(frames[3])  # the patched processor rejects all-black images
    real = judge.processor

    def picky(images=None, **kwargs):
        if any(np.asarray(im).max() == 0 for im in images):
            raise RuntimeError("cannot preprocess a black frame")
        return real(images=images, **kwargs)

    monkeypatch.setattr(judge, "processor", picky)
    res = judge.score(SceneBatch(frames, scenes.prompts))
    assert res.valid.tolist() == [i != 3 for i in range(len(scenes))]
    assert np.isnan(res.scores[3]) and "black frame" in res.reasons[3]
    keep = np.arange(len(scenes)) != 3
    np.testing.assert_allclose(res.scores[keep], good.scores[keep], atol=1e-5, rtol=0)
    assert res.counts["scenes_masked"] == 1


def test_missing_or_incomplete_folders_raise_clearly(tmp_path, checkpoint):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=r"no-such-model.*config\.json"):
        VLMJudge(str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty.*no config\.json"):
        VLMJudge(str(empty))
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_bytes((checkpoint / "config.json").read_bytes())
    with pytest.raises(ValueError, match=r"no weight files.*config-only"):
        VLMJudge(str(config_only))


def test_partial_weights_are_refused(tmp_path, checkpoint):
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"
    partial.mkdir()
    for f in checkpoint.iterdir():
        (partial / f.name).write_bytes(f.read_bytes())
    state = load_file(str(checkpoint / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "lm_head" not in k}, str(partial / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="random weights"):
        VLMJudge(str(partial))


def test_artifact_actor_uses_the_judge(checkpoint, judge):
    from reward_actors.actors import ArtifactActor
    from reward_actors.config import ArtifactConfig

    assert ArtifactActor(ArtifactConfig(vlm=str(checkpoint))).model() == (judge.name, judge.version)
