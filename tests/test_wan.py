"""The Wan-architecture backend at tiny width with random weights: the same transformer as
diffusers, generation with the KV cache equal to one masked pass over the whole sequence,
Self-Forcing checkpoints loaded key by key, and the protocol's contract."""

import numpy as np
import pytest
import torch

from inflvg.context import make_strategy
from inflvg.generate import generate
from inflvg.prompts import load_prompts
from inflvg.protocol import Generator, backend_widths, load_backend
from inflvg.wan.config import preset
from inflvg.wan.model import CausalWan
from inflvg.wan.weights import wan_name

FREE = "tests/data/free_text.jsonl"


@pytest.fixture(scope="module")
def gen():
    return load_backend("wan-tiny")


def test_the_block_is_diffusers_wan_block(gen):
    """forward_sequence, every token seeing every token at one timestep, equals diffusers' own forward."""
    model, cfg = gen.model, gen.cfg
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, cfg.latent_channels, *cfg.latent_shape, generator=g)
    states, _ = gen.text.encode(["A golden retriever runs", "A grey cat sleeps"])
    t = torch.tensor([700.0, 300.0])
    n = 6 * cfg.tokens_per_frame
    ours = model.forward_sequence(x, t[:, None].expand(2, 6), model.embed_text(states), torch.ones(n, n, dtype=torch.bool))
    theirs = model.net(x.transpose(1, 2), t, states).sample.transpose(1, 2)
    assert (ours - theirs).abs().max().item() < 1e-5


class Recorder:
    """Watches the generator's block calls (the thing under test runs unchanged): per block, the
    first denoising step's input, context and flow, and the clean block written to the cache."""

    def __init__(self, inner):
        self.inner, self.blocks = inner, {}

    def __call__(self, x, t, first, text, ctx):
        flow, kv = self.inner(x, t, first, text, ctx)
        entry = self.blocks.setdefault(first, {})
        if "noisy" not in entry:
            entry.update(noisy=x.clone(), sigma=float(t[0]), ctx=ctx, flow=flow.clone())
        if float(t[0]) == 0.0:
            entry["clean"] = x.clone()
        return flow, kv


@pytest.mark.parametrize("name", ["full", "window", "random"])
def test_cached_generation_equals_one_masked_pass_over_the_sequence(gen, name, monkeypatch):
    """Each block's first denoising step, made with the cache, equals the same model run once over
    the whole sequence (earlier blocks clean, this one noisy) with the block-causal mask that
    gives every block exactly the context it had: full history, a window, a token selection."""
    cfg, model = gen.cfg, gen.model
    rec = Recorder(model.forward_block)
    monkeypatch.setattr(model, "forward_block", rec)
    ps = load_prompts(FREE)[0]
    generate(gen, [ps], make_strategy(name), seed=3)
    n, gw, f = cfg.tokens_per_frame, cfg.grid[1], cfg.frames_per_block
    text = gen.encode_prompts(list(ps.scenes)).tokens  # (S, L, dim)
    worst = 0.0
    for k, block in sorted(rec.blocks.items()):
        frames = k + f
        allowed = torch.zeros(frames * n, frames * n, dtype=torch.bool)
        for first, earlier in rec.blocks.items():
            if first <= k:
                rows = slice(first * n, (first + f) * n)
                allowed[rows, rows] = True
                if earlier["ctx"] is not None:
                    t, h, w = earlier["ctx"].pos[0][earlier["ctx"].valid[0]].unbind(-1)
                    allowed[rows, t * n + h * gw + w] = True
        latents = torch.cat([rec.blocks[b]["clean"] for b in sorted(rec.blocks) if b < k] + [block["noisy"]], 1)
        times = torch.tensor([0.0] * k + [block["sigma"]] * f)[None]
        per_frame = text[torch.arange(frames) // cfg.frames_per_scene][None]  # (1, T, L, dim)
        ref = model.forward_sequence(latents, times, per_frame, allowed)[:, k:]
        worst = max(worst, (ref - block["flow"]).abs().max().item())
    print(f"{name}: max |cached - whole sequence| = {worst:.2e} over {len(rec.blocks)} blocks")
    assert len(rec.blocks) == ps.n_scenes and worst <= 1e-4


def write_folder(gen, folder, rename: dict | None = None, reshape: str | None = None):
    """A Wan weights folder as users have them: a Self-Forcing-style checkpoint (the wrapper's
    ``model.``-prefixed WanModel keys, under ``generator`` and ``generator_ema``) and the
    diffusers-layout tokenizer/, text_encoder/, vae/."""
    state = {"model." + wan_name(k): v.clone() for k, v in gen.model.net.state_dict().items()}
    for old, new in (rename or {}).items():
        state[new] = state.pop(old)
    if reshape:
        state[reshape] = state[reshape][..., :-1]
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"generator": state, "generator_ema": state, "critic": {"x": torch.zeros(1)}}, folder / "self_forcing_dmd.pt")
    gen.text.tok.save_pretrained(folder / "tokenizer")
    gen.text.encoder.save_pretrained(folder / "text_encoder")
    gen.vae.save_pretrained(folder / "vae")
    return folder


def test_a_self_forcing_checkpoint_loads_key_by_key_and_generates_the_same_video(gen, tmp_path):
    folder = write_folder(gen, tmp_path / "wan")
    names = torch.load(folder / "self_forcing_dmd.pt", weights_only=True)["generator"]
    assert "model.blocks.0.self_attn.q.weight" in names and "model.head.modulation" in names  # Wan's own layout
    loaded = load_backend("wan-tiny", weights=str(folder))
    ps = load_prompts(FREE)[1:2]
    a, b = (generate(g, ps, make_strategy("random"), seed=1).frames for g in (gen, loaded))
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rename": {"model.blocks.1.cross_attn.k.weight": "model.blocks.1.cross_attn.key.weight"}},
         "lacks 1 key.*'blocks.1.cross_attn.k.weight' \\(diffusers name 'blocks.1.attn2.to_k.weight'\\)"),
        ({"reshape": "model.blocks.2.ffn.0.weight"},
         "key 'blocks.2.ffn.0.weight' has shape \\(96, 47\\) in the checkpoint, the model expects \\(96, 48\\)"),
    ],
)
def test_a_renamed_or_reshaped_key_is_named(gen, tmp_path, change, message):
    folder = write_folder(gen, tmp_path / "bad", **change)
    with pytest.raises(ValueError, match=message):
        load_backend("wan-tiny", weights=str(folder))


def test_missing_parts_are_clear_errors(gen, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backend("wan-tiny", weights=str(tmp_path / "nowhere"))
    folder = write_folder(gen, tmp_path / "novae")
    import shutil

    shutil.rmtree(folder / "vae")
    with pytest.raises(FileNotFoundError, match="no vae/"):
        load_backend("wan-tiny", weights=str(folder))
    (folder / "second.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="exactly one causal transformer checkpoint"):
        load_backend("wan-tiny", weights=str(folder))


def test_wan_1_3b_has_wan2_1_t2v_1_3b_dimensions_and_parameter_count():
    cfg = preset("wan-1.3b")
    with torch.device("meta"):
        model = CausalWan(cfg)
    assert sum(p.numel() for p in model.net.parameters()) == 1_418_996_800  # Wan2.1-T2V-1.3B's transformer
    assert (cfg.grid, cfg.tokens_per_frame, cfg.frames_per_block, cfg.horizon_frames) == ((30, 52), 1560, 3, 21)
    assert backend_widths("wan-1.3b") == (1536, 1536) and backend_widths("wan-tiny") == (48, 48)


def test_the_backend_speaks_the_protocol_on_a_non_square_grid(gen):
    spec = gen.spec
    assert isinstance(gen, Generator) and spec.grid == (4, 6) and spec.frame_shape == (64, 96) and spec.frames_per_block == 3
    cache = gen.new_cache(1, 12, 3, spec.context, full_history=False, uses_sink=True)
    emb = gen.encode_prompts(["A golden retriever runs, face the camera"])
    noise = torch.Generator().manual_seed(0)
    for _ in range(3):
        cache.select(np.full((1, spec.context.budget_k), -1))
        gen.decode(gen.next_block(cache, emb, noise, shared_noise=False))
    pool = cache.pool()  # frames 3..5 left the window when frames 6..8 came
    assert pool.size == 3 * 24 and set(pool.frame) == {3, 4, 5}
    assert pool.row.max() == 3 and pool.col.max() == 5 and pool.grid == (4, 6)
    assert torch.equal(pool.features[0, :24], cache.pool_kv[gen.cfg.feature_layer, 0, 0, :24])  # the feature layer's keys
    ids = gen.tokenizer.word_ids(["A golden retriever runs", "The golden zebra"])
    assert ids[0, 1] == ids[1, 1] != 0 and ids[1, 2] > len(gen.text.tok)  # 'golden' shared; 'zebra' unknown but its own id
    assert gen.tokenizer.unknown_words("The golden zebra") == ["zebra"]


def test_the_scale_benchmark_reports_block_cost_and_kv_bytes(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "scale.json"
    r = subprocess.run([sys.executable, "-m", "inflvg.bench.scale", "--generator", "wan-tiny", "--lengths", "1,2",
                        "--strategies", "full,window,random", "--repeats", "1", "--out", str(out)],
                       check=False, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    for name in ("full", "window", "random"):
        s = result["strategies"][name]
        assert all(s["ms_per_block"][L] > 0 and s["decode_ms_per_block"][L] > 0 for L in ("1", "2"))
        assert s["kv_bytes_whole_history"] > 0
    assert result["strategies"]["random"]["kv_bytes_gathered"] == 24 * 1152  # K tokens x (3 layers x k, v x 48 x fp32)
    assert result["strategies"]["window"]["kv_bytes_gathered"] == 0
    assert result["strategies"]["full"]["context_tokens"]["2"] > result["strategies"]["full"]["context_tokens"]["1"]
    assert result["peak_memory_bytes"] > 0 and out.with_suffix(".md").read_text().startswith("| strategy |")


def test_bf16_keeps_the_rope_tables_exact():
    """Under bf16 (the CUDA dtype) the RoPE tables stay the fp32 ones: a cast there and back would round them."""
    import torch

    bf16 = load_backend("wan-tiny")
    exact = {k: v.clone() for k, v in bf16.model.net.rope.named_buffers()}
    bf16.dtype = torch.bfloat16  # what a CUDA device gets; the cast itself runs on CPU here
    bf16._to_device()
    assert bf16.model.net.proj_out.weight.dtype == torch.bfloat16
    assert all(torch.equal(v, exact[k]) and v.dtype == torch.float32 for k, v in bf16.model.net.rope.named_buffers())
