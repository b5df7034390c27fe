"""Device handling without a GPU: every model path runs on the ``meta`` device, where torch checks
that all tensors of an op are on one device (and their shapes) without computing anything, so a
tensor made on the CPU inside a model path raises exactly as it would beside CUDA tensors. And the
resources the ``gpu`` preset asks Ray for fit one GPU node; reward actors pick their device from
the GPUs they reserve and refuse to hold a GPU they cannot use.

What cannot run on meta, and is left out below: the text encoders (transformers' BERT and umT5
build their attention mask with a data-dependent ``padding_mask.all()``, a host read of a value);
``decode`` and the StoryWorld cache's ``pool`` (they copy results to host numpy, as they must).
"""

import numpy as np
import pytest
import torch

from inflvg.config import ContextConfig, GeneratorConfig, WorldConfig
from inflvg.protocol import PromptEmbedding

META = torch.device("meta")
NODE_GPUS, NODE_CPUS = 1.0, 16  # the node the gpu preset's docstring promises it fits


def meta_prompts(b: int, length: int, d: int) -> PromptEmbedding:
    """Prompt embeddings as a backend's encode_prompts returns them, on meta (the text encoders cannot run there)."""
    return PromptEmbedding(torch.empty(b, length, d, device=META), torch.ones(b, length, dtype=torch.bool, device=META),
                           torch.zeros(b, length, dtype=torch.long, device=META))  # fmt: skip


# --- the gpu preset fits one GPU node --------------------------------------------------------


def test_the_gpu_preset_fits_one_gpu_node_of_16_cpus():
    from cluster.config import gpu

    cfg = gpu()
    families = [cfg.rewards.alignment, cfg.rewards.identity, cfg.rewards.artifacts]
    gpus = cfg.rollout.replicas * cfg.rollout.num_gpus + cfg.learner.num_gpus + sum(f.replicas * f.num_gpus for f in families)
    cpus = cfg.rollout.replicas * cfg.rollout.num_cpus + cfg.learner_num_cpus + sum(f.replicas * f.num_cpus for f in families)
    assert 0 < gpus <= NODE_GPUS, f"the gpu preset asks for {gpus} GPUs"
    assert cpus <= NODE_CPUS, f"the gpu preset asks for {cpus} CPUs"
    assert cfg.rollout.num_gpus > 0 and 0 < cfg.learner.num_gpus <= 1 and cfg.rollout.threads <= cfg.rollout.num_cpus
    assert "16 CPUs" in (gpu.__doc__ or "") and "--rollout.replicas" in (gpu.__doc__ or "")


# --- RoPE ------------------------------------------------------------------------------------


def test_rope_tables_are_made_on_the_positions_device():
    from inflvg.generator.rope import rope_tables, temporal_freqs

    assert temporal_freqs(2, 16, 64, "flex", device=META).device == META
    cpu_freqs = temporal_freqs(2, 16, 64, "flex")  # tables built elsewhere still meet the positions on their device
    cos, sin = rope_tables(torch.zeros(2, 5, 3, device=META), 16, cpu_freqs)
    assert cos.device == sin.device == META and cos.shape == sin.shape == (2, 5, 8)
    on_cpu = rope_tables(torch.rand(2, 5, 3) * 9, 16, cpu_freqs)  # and on the CPU nothing changed
    assert torch.allclose(on_cpu[0] ** 2 + on_cpu[1] ** 2, torch.ones(2, 5, 8))


# --- the StoryWorld generator on meta --------------------------------------------------------


@pytest.fixture(scope="module")
def storyworld_meta():
    from inflvg.generator.backend import StoryWorldGenerator
    from inflvg.generator.model import Generator

    world = WorldConfig(n_scenes=4, cast_size=3)
    cfg = GeneratorConfig(d_model=32, n_heads=2, n_layers=2, d_text=32, text_layers=1, denoise_steps=2, horizon_frames=16)
    with torch.device(META):
        model = Generator(cfg, world.frame_size).eval()
    return StoryWorldGenerator(model, world, ContextConfig(budget_k=8, window_frames=2))


@pytest.mark.parametrize("full_history", [False, True])
def test_storyworld_makes_blocks_on_meta(storyworld_meta, full_history):
    gen = storyworld_meta
    assert gen.device == META and all(p.device == META for p in gen.model.parameters())
    b, size, d = 2, gen.model.frame_size, gen.model.cfg.d_model
    prompts = meta_prompts(b, gen.model.cfg.max_prompt_tokens, d)
    cache = gen.new_cache(b, 8, 2, gen.spec.context, full_history=full_history, uses_sink=True)
    noise = torch.Generator().manual_seed(0)  # CPU noise (reproducible across devices), moved to the model's device
    for _ in range(4):  # frames leave the window for the pool (window 2)
        x = gen.next_block(cache, prompts, noise, shared_noise=True)
        assert x.device == META and x.shape == (b, 1, size, size, 3)
    assert cache.pool_kv.device == META and cache.t_freqs.device == META
    if not full_history:
        cache.select(np.array([[0, 1, 2, -1, -1, -1, -1, -1]] * b))  # pool() reads frame numbers to host numpy: not on meta
        assert cache.selected is not None and cache.selected.kv.device == META
    x = gen.next_block(cache, prompts, noise, shared_noise=False)
    assert x.device == META and x.shape == (b, 1, size, size, 3)
    query = gen.prompt_query(prompts)
    assert query.vector.device == META and query.vector.shape == (b, d)
    with pytest.raises(NotImplementedError, match="meta tensor"):  # the one host copy, at the very end
        gen.decode(x)


def test_storyworld_model_paths_on_meta(storyworld_meta):
    from inflvg.generator.model import Context, Text

    model = storyworld_meta.model
    b, d, size, n_layers = 3, model.cfg.d_model, model.frame_size, model.cfg.n_layers
    emb = meta_prompts(b, model.cfg.max_prompt_tokens, d)
    text = Text(emb.tokens, emb.mask, emb.tokens[:, 0])
    t_freqs = model.t_freqs(64)
    frames, t = torch.empty(b, size, size, 3, device=META), torch.arange(b, device=META)
    kv, hidden = model.encode_frames(frames, t, text, long=True, t_freqs=t_freqs)
    assert kv.device == META and kv.shape == (n_layers, 2, b, model.long_tokens_per_frame, d) and hidden.shape[-1] == d
    n = 5
    ctx = Context(torch.empty(n_layers, 2, b, n, d, device=META), torch.empty(b, n, 3, device=META),
                  torch.ones(b, n, dtype=torch.bool, device=META))  # fmt: skip
    v = model.velocity(frames, torch.full((b,), 0.5, device=META), t, text, ctx, t_freqs)
    assert v.device == META and v.shape == (b, size, size, 3)


# --- the Wan backend on meta -----------------------------------------------------------------


@pytest.fixture(scope="module")
def wan_meta():
    from inflvg.wan.backend import WanGenerator, random_parts
    from inflvg.wan.config import preset

    cfg = preset("wan-tiny")
    return WanGenerator(cfg, *random_parts(cfg), device="meta")


def test_wan_tiny_makes_blocks_on_meta(wan_meta):
    gen, cfg = wan_meta, wan_meta.cfg
    assert all(p.device == META for p in gen.model.parameters())
    b, shape = 2, (2, cfg.frames_per_block, cfg.latent_channels, *cfg.latent_shape)
    prompts = meta_prompts(b, cfg.max_prompt_tokens, cfg.dim)
    cache = gen.new_cache(b, 12, cfg.frames_per_scene, cfg.context, full_history=False, uses_sink=True)
    noise = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = gen.next_block(cache, prompts, noise, shared_noise=True)
        assert x.device == META and x.shape == shape
    pool = cache.pool()  # the Wan cache keeps frame numbers on the host already
    assert pool.features.device == META and pool.size == cfg.tokens_per_frame * cfg.frames_per_block
    cache.select(np.tile(np.arange(cfg.context.budget_k) - 4, (b, 1)))  # some empty slots (-1..)
    assert cache.selected is not None and cache.selected.pos.device == cache.selected.valid.device == META
    x = gen.next_block(cache, prompts, noise, shared_noise=False)
    assert x.device == META and x.shape == shape
    query = gen.prompt_query(prompts)
    assert query.vector.device == META and query.vector.shape == (b, cfg.dim)
    with pytest.raises(NotImplementedError, match="meta tensor"):  # the VAE runs; only the final host copy cannot
        gen.decode(x)


def test_wan_reference_sequence_on_meta(wan_meta):
    cfg, model = wan_meta.cfg, wan_meta.model
    frames, n = 2 * cfg.frames_per_block, cfg.tokens_per_frame
    x = torch.empty(1, frames, cfg.latent_channels, *cfg.latent_shape, device=META)
    allowed = torch.ones(frames * n, frames * n, dtype=torch.bool, device=META)
    out = model.forward_sequence(x, torch.zeros(1, frames, device=META), torch.empty(1, 4, cfg.dim, device=META), allowed)
    assert out.device == META and out.shape == x.shape


# --- the selection policy on meta ------------------------------------------------------------


def test_selection_policy_scores_and_samples_on_meta():
    from inflvg.plackett_luce import plackett_luce_entropy, plackett_luce_log_prob
    from inflvg.policy import PolicyConfig, SelectionPolicy, candidate_features, gumbel_top_k, top_k, word_overlap
    from inflvg.protocol import Pool

    with torch.device(META):
        policy = SelectionPolicy(PolicyConfig(d_feature=32, d_prompt=32, d_model=16, n_heads=2, hidden=32))
    b, n, length, k = 2, 12, 5, 4
    frame = np.repeat(np.arange(3), 4)
    pool = Pool(torch.empty(b, n, 32, device=META), frame, frame // 2, np.tile([0, 0, 1, 1], 3), np.tile([0, 1, 0, 1], 3), (2, 2))
    ids = torch.zeros(b, length, dtype=torch.long, device=META)
    overlap = word_overlap(ids, torch.zeros(b, 2, length, dtype=torch.long, device=META), pool.scene)
    feats = candidate_features(pool.features, pool, 6, overlap)
    assert feats.device == META and feats.shape == (b, n, 32 + 3 + 2 * length)
    logits = policy(feats, torch.empty(b, length, 32, device=META), torch.ones(b, length, dtype=torch.bool, device=META),
                    torch.ones(b, n, dtype=torch.bool, device=META))  # fmt: skip
    assert logits.device == META and logits.shape == (b, n)
    for chosen in (gumbel_top_k(logits, k, torch.Generator().manual_seed(0)), top_k(logits, k)):
        assert chosen.device == META and chosen.shape == (b, k)
        assert plackett_luce_log_prob(logits, chosen).shape == plackett_luce_entropy(logits, chosen).shape == (b,)


# --- reward models run where their actor reserved a device -----------------------------------


def test_reward_device_follows_the_reserved_gpus():
    from reward_actors.device import onnx_providers, reward_device

    assert reward_device(0.0, "AlignmentConfig.num_gpus") == "cpu"
    assert reward_device(0.0, "AlignmentConfig.num_gpus", cuda_available=True) == "cpu"  # never a GPU it did not reserve
    assert reward_device(0.25, "AlignmentConfig.num_gpus", cuda_available=True) == "cuda"
    with pytest.raises(RuntimeError, match=r"AlignmentConfig\.num_gpus=0\.25 reserves a GPU.*CUDA is not available.*=0"):
        reward_device(0.25, "AlignmentConfig.num_gpus", cuda_available=False)
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert onnx_providers("cuda", available=["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    with pytest.raises(RuntimeError, match=r"IdentityConfig\.num_gpus.*no CUDAExecutionProvider.*onnxruntime-gpu"):
        onnx_providers("cuda", available=["CPUExecutionProvider"])


@pytest.mark.parametrize("family", ["alignment", "identity", "artifacts"])
def test_a_reward_actor_reserving_a_gpu_without_cuda_fails_naming_the_field(family, monkeypatch):
    from reward_actors.actors import ACTORS
    from reward_actors.config import AlignmentConfig, ArtifactConfig, IdentityConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg_cls = {"alignment": AlignmentConfig, "identity": IdentityConfig, "artifacts": ArtifactConfig}[family]
    with pytest.raises(RuntimeError, match=rf"{cfg_cls.__name__}\.num_gpus=0\.5 reserves a GPU"):
        ACTORS[family](cfg_cls(num_gpus=0.5))


def test_the_no_model_artifact_score_refuses_a_gpu(monkeypatch):
    from reward_actors.actors import ArtifactActor
    from reward_actors.config import ArtifactConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match=r"ArtifactConfig\.num_gpus=0\.5 reserves a GPU the no-model artifact score"):
        ArtifactActor(ArtifactConfig(num_gpus=0.5))
    assert ArtifactActor(ArtifactConfig()).scorer.name == "storyworld-artifacts"


def test_identity_runs_its_onnx_models_on_cpu_only_without_a_gpu():
    from reward_actors.actors import IdentityActor
    from reward_actors.config import IdentityConfig
    from reward_actors.identity import IdentityScorer

    scorer = IdentityActor(IdentityConfig()).scorer
    assert isinstance(scorer, IdentityScorer)
    session = scorer.model.session
    assert scorer.device == "cpu" and session is not None and session.get_providers() == ["CPUExecutionProvider"]


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")  # weights load as a no-op on meta
def test_the_alignment_scorer_embeds_on_its_device():
    from reward_actors.alignment import AlignmentScorer

    scorer = AlignmentScorer(device="meta")
    model = scorer.model
    assert isinstance(model, torch.nn.Module) and all(p.device == META for p in model.parameters())
    frames = [np.zeros((5, 32, 32, 3), np.uint8), np.zeros((9, 32, 32, 3), np.uint8)]
    images, counts = scorer.encode_frames(frames)
    texts = scorer.encode_prompts(["a red fox in a forest", "a dog"])
    assert images.device == texts.device == META and counts == [5, 8]
    assert images.shape[0] == 13 and texts.shape[0] == 2 and images.shape[1] == texts.shape[1]
