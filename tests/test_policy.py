"""The selection policy: Plackett-Luce against brute-force enumeration, Gumbel-top-K against
softmax frequencies, masking, fp32 log-probs, gradients, and a real run inside ``generate``."""

import itertools
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from inflvg.generate import generate
from inflvg.grpo import credit_transitions, grpo_loss
from inflvg.policy import (
    N_EXTRA,
    LearnedStrategy,
    PolicyConfig,
    PromptEmbedder,
    SelectionPolicy,
    candidate_features,
    first_mention,
    gumbel_top_k,
    load_policy,
    plackett_luce_entropy,
    plackett_luce_log_prob,
    save_policy,
    top_k,
    word_overlap,
)
from inflvg.protocol import Pool
from inflvg.rollout import collate_transitions
from inflvg.world import sample_prompt_set


def slow_pl_log_prob(scores: list, picks: tuple) -> float:
    """Product formula, one pick at a time: prod_i exp(s_ci) / sum_{j remaining} exp(s_j)."""
    remaining, p = set(range(len(scores))), 1.0
    for c in picks:
        p *= math.exp(scores[c]) / sum(math.exp(scores[j]) for j in remaining)
        remaining.remove(c)
    return math.log(p)


@pytest.mark.parametrize(("n", "k"), [(5, 3), (4, 4), (6, 1)])
def test_plackett_luce_matches_brute_force_enumeration(n, k):
    scores = torch.randn(n, generator=torch.Generator().manual_seed(n * 10 + k)) * 2
    tuples = list(itertools.permutations(range(n), k))
    lp = plackett_luce_log_prob(scores.expand(len(tuples), n), torch.tensor(tuples))
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    slow = torch.tensor([slow_pl_log_prob(scores.tolist(), t) for t in tuples])
    assert torch.allclose(lp, slow, atol=1e-5)


def test_padding_is_excluded_and_empty_slots_count_nothing():
    scores = torch.tensor([[0.3, -1.0, 2.0, 5.0, 0.0]])
    valid = torch.tensor([[True, True, True, False, False]])  # a pool of 3 padded to 5
    tuples = list(itertools.permutations(range(3), 2))
    lp = plackett_luce_log_prob(scores.expand(len(tuples), -1), torch.tensor(tuples), valid.expand(len(tuples), -1))
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-6)
    full = plackett_luce_log_prob(scores, torch.tensor([[2, 0, 1, -1]]), valid)  # K=4 > pool: one empty slot
    assert full.item() == pytest.approx(slow_pl_log_prob([0.3, -1.0, 2.0], (2, 0, 1)), abs=1e-6)
    assert plackett_luce_log_prob(scores, torch.tensor([[3, 0]]), valid).item() == float("-inf")


def test_gumbel_top_k_first_pick_and_pairs_follow_plackett_luce():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    n_samples = 4000
    picks = gumbel_top_k(logits.expand(n_samples, -1), 2, torch.Generator().manual_seed(0))
    first = torch.bincount(picks[:, 0], minlength=4).float() / n_samples
    assert torch.allclose(first, logits.softmax(0), atol=0.025)
    pairs = list(itertools.permutations(range(4), 2))
    expected = plackett_luce_log_prob(logits.expand(len(pairs), -1), torch.tensor(pairs)).exp()
    observed = torch.tensor([((picks[:, 0] == a) & (picks[:, 1] == b)).float().mean().item() for a, b in pairs])
    assert torch.allclose(observed, expected, atol=0.02)


def test_masked_candidates_are_never_selected():
    logits = torch.tensor([[0.0, 50.0, 0.1, 50.0, -0.2]]).expand(500, -1)
    valid = torch.tensor([True, False, True, False, True]).expand(500, -1)
    picks = gumbel_top_k(logits, 4, torch.Generator().manual_seed(1), valid)
    assert set(picks[:, :3].flatten().tolist()) == {0, 2, 4} and (picks[:, 3] == -1).all()
    assert top_k(logits[:1], 4, valid[:1]).tolist() == [[2, 0, 4, -1]]
    assert (top_k(logits[:1].masked_fill(~valid[:1], float("-inf")), 2) == torch.tensor([[2, 0]])).all()


def test_log_prob_and_entropy_are_fp32_with_bf16_logits():
    logits = torch.randn(3, 40).bfloat16()
    chosen = top_k(logits, 5)
    lp = plackett_luce_log_prob(logits, chosen)
    assert lp.dtype == torch.float32
    assert torch.equal(lp, plackett_luce_log_prob(logits.float(), chosen))
    h = plackett_luce_entropy(logits, chosen[:, :1])  # one pick: the exact softmax entropy
    p = logits.float().softmax(-1)
    assert h.dtype == torch.float32 and torch.allclose(h, -(p * p.log()).sum(-1), atol=1e-5)


def random_features(b: int, n: int, d: int, length: int, g: torch.Generator | None = None) -> torch.Tensor:
    """(B, N, d + N_EXTRA + 2L): random encoder features and extras, random 0/1 word overlaps and first mentions."""
    return torch.cat([torch.randn(b, n, d + N_EXTRA, generator=g), torch.randint(0, 2, (b, n, 2 * length), generator=g).float()], -1)


def small_policy(d: int = 32) -> SelectionPolicy:
    torch.manual_seed(0)
    return SelectionPolicy(PolicyConfig(d_feature=d, d_prompt=d, d_model=16, n_heads=2, hidden=32))


def test_gradients_reach_every_parameter():
    policy = small_policy()
    feats, prompt = random_features(2, 7, 32, 5), torch.randn(2, 5, 32)
    mask, valid = torch.tensor([[True] * 5, [True] * 3 + [False] * 2]), torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    logits = policy(feats, prompt, mask, valid)
    assert torch.isinf(logits[1, 4:]).all() and torch.isfinite(logits[1, :4]).all()
    chosen = gumbel_top_k(logits, 3, torch.Generator().manual_seed(0))
    plackett_luce_log_prob(logits, chosen, valid).sum().backward()
    for name, p in policy.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_config_validation_and_checkpoint_round_trip(tmp_path):
    with pytest.raises(ValueError, match="n_heads"):
        PolicyConfig(d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="temperature"):
        PolicyConfig(temperature=0.0)
    policy = small_policy()
    save_policy(policy, tmp_path / "p" / "policy.pt")
    loaded = load_policy(tmp_path / "p" / "policy.pt")
    assert loaded.cfg == policy.cfg
    assert all(torch.equal(a, b) for a, b in zip(policy.state_dict().values(), loaded.state_dict().values(), strict=True))
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_policy(tmp_path / "missing.pt")


def test_learned_strategy_in_generate_records_replayable_transitions(tiny_gen):
    stories = [sample_prompt_set(i, "heldout", 3, 3, f"h{i}") for i in range(2)]
    policy = small_policy(tiny_gen.spec.d_feature)
    strategy = LearnedStrategy(policy, PromptEmbedder(tiny_gen), seed=7)
    res = generate(tiny_gen, stories, strategy, seed=3)
    assert [st.scene for st in strategy.transitions] == [1, 2]  # scene 0 has an empty pool: no action
    for st, sel in zip(strategy.transitions, res.selections[1:], strict=True):
        assert np.array_equal(st.chosen.numpy(), sel) and ((sel >= 0) & (sel < st.pool_size)).all()
        assert all(len(set(row.tolist())) == len(row) for row in sel)
    # the learner recomputes the log-probs from the records alone, padded to one batch
    videos = strategy.video_transitions()
    batch = collate_transitions([t for v in videos for t in v])
    logits = policy(batch.features, batch.prompt_tokens, batch.prompt_mask, batch.valid)
    logp = plackett_luce_log_prob(logits, batch.chosen, batch.valid)
    assert torch.allclose(logp, batch.logp_old, atol=1e-4)
    greedy = LearnedStrategy(policy, PromptEmbedder(tiny_gen), greedy=True, record=False)
    a, b = (generate(tiny_gen, stories, greedy, seed=3).selections for _ in range(2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)) and greedy.transitions == []


def test_per_video_seeds_draw_each_row_as_a_batch_of_one_would():
    from inflvg.context.base import SelectionState

    policy = small_policy()
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(1, 12, 32, generator=g).expand(3, -1, -1)  # three copies of one pool
    prompt = torch.randn(1, 4, 32, generator=g)
    ids = torch.tensor([[3, 5, 7, 9]])

    class FixedPrompts:  # every prompt embeds to the same tokens and word ids
        def __call__(self, prompts):
            return prompt.expand(len(prompts), -1, -1), torch.ones(len(prompts), 4, dtype=torch.bool), self.word_ids(prompts)

        def word_ids(self, prompts):
            return ids.expand(len(prompts), -1)

    embed = FixedPrompts()
    ps = sample_prompt_set(0, "heldout", 3, 4, "h0")
    frame, tok = np.repeat(np.arange(3), 4), np.tile(np.arange(4), 3)

    def state(b: int) -> SelectionState:
        pool = Pool(feats[:b], frame, frame // 2, tok // 2, tok % 2, (2, 2))
        return SelectionState(scene=2, prompt_sets=[ps] * b, frames_per_scene=2, budget_k=3, pool=pool, frames=None, rng=None)

    batched = LearnedStrategy(policy, embed, seed=[11, 12, 13]).select(state(3))
    alone = [LearnedStrategy(policy, embed, seed=s).select(state(1))[0] for s in (11, 12, 13)]
    assert all(np.array_equal(batched[b], alone[b]) for b in range(3))
    assert len({tuple(row) for row in batched}) > 1  # same scores, different noise per row
    with pytest.raises(ValueError, match="one per video"):
        LearnedStrategy(policy, embed, seed=[1, 2]).select(state(3))


def test_a_grpo_step_raises_the_probability_of_the_best_rewarded_selection():
    from inflvg.rollout import Rollout, Transition

    policy = small_policy()
    g = torch.Generator().manual_seed(3)
    feats, prompt = random_features(1, 6, 32, 4, g), torch.randn(1, 4, 32, generator=g)
    mask = torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        logits = policy(feats, prompt, mask)
    chosen = [torch.tensor([[0, 1]]), torch.tensor([[2, 3]]), torch.tensor([[4, 5]]), torch.tensor([[3, 0]])]
    group = [
        Rollout("s", 0, i, 0, 0, i, np.array([np.nan, r], np.float32), transitions=[Transition(
            1, feats[0].numpy(), prompt[0].numpy(), mask[0].numpy(), c[0].numpy(), float(plackett_luce_log_prob(logits, c)))])
        for i, (c, r) in enumerate(zip(chosen, [1.0, 0.0, 0.2, 0.5], strict=True))
    ]  # fmt: skip
    transitions, adv, valid = credit_transitions([group])
    batch = collate_transitions(transitions)
    before = [p.detach().clone() for p in policy.parameters()]
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    for _ in range(3):
        logits = policy(batch.features, batch.prompt_tokens, batch.prompt_mask, batch.valid)
        logp = plackett_luce_log_prob(logits, batch.chosen, batch.valid)
        loss, _ = grpo_loss(logp, batch.logp_old, adv, valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, policy.parameters(), strict=True))
    with torch.no_grad():
        after = plackett_luce_log_prob(policy(feats, prompt, mask), chosen[0])
    assert after.item() > batch.logp_old[0].item() + 0.05


def test_word_overlap_marks_the_current_words_each_candidates_scene_prompt_contained():
    now_ids = torch.tensor([[4, 7, 9, 0]])  # 0: no word (padding, a special token, punctuation)
    past_ids = torch.tensor([[[7, 2, 0], [9, 4, 7]]])  # scene 0 "7 2", scene 1 "9 4 7"
    got = word_overlap(now_ids, past_ids, np.array([1, 0, 0, 1]))
    scene0, scene1 = [0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]  # a non-word never matches, not even another
    assert got.tolist() == [[scene1, scene0, scene0, scene1]]


def test_first_mention_marks_the_earliest_pool_scene_holding_each_word():
    overlap = torch.tensor([[[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 1, 0]]]).float()  # (1, 4 candidates, 3 words)
    got = first_mention(overlap, np.array([3, 1, 1, 2]))  # the candidates' scenes
    assert got.tolist() == [[[0, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]]]  # word 0 first in scene 1, word 1 too; word 2 nowhere


def test_a_checkpoint_from_before_the_first_mention_term_loads_with_it_at_zero(tmp_path):
    policy = small_policy()
    old = {k: v for k, v in policy.state_dict().items() if not k.startswith("first_weight.")}
    torch.save({"config": asdict(policy.cfg), "state_dict": old}, tmp_path / "old.pt")
    loaded = load_policy(tmp_path / "old.pt")
    assert not loaded.first_weight.weight.any() and torch.equal(loaded.word_weight.weight, policy.word_weight.weight)
    torch.save({"config": asdict(policy.cfg), "state_dict": {k: v for k, v in old.items() if not k.startswith("head.")}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="head"):
        load_policy(tmp_path / "bad.pt")


def test_candidate_positions_on_a_non_square_grid():
    """Row and column inputs span [0, 1] along each axis of a 3 x 5 grid, age is relative to now."""
    frame, tok = np.repeat([2, 6], 15), np.tile(np.arange(15), 2)
    pool = Pool(torch.zeros(1, 30, 8), frame, frame // 4, tok // 5, tok % 5, (3, 5))
    feats = candidate_features(pool.features, pool, now_frame=8, overlap=torch.zeros(1, 30, 2))
    age, row, col = feats[0, :, 8], feats[0, :, 9], feats[0, :, 10]
    assert row[:15].tolist() == [0.0] * 5 + [0.5] * 5 + [1.0] * 5
    assert col[:5].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert age.tolist() == [0.75] * 15 + [0.25] * 15 and feats.shape == (1, 30, 8 + N_EXTRA + 2 * 2)


def test_free_text_shares_words_through_the_backend_tokenizer(tiny_gen):
    """Words outside StoryWorld's vocabulary still match each other (not all [UNK]), and are counted."""
    a, b, c = "A golden retriever runs, face the camera", "The golden retriever sleeps", "A grey cat"
    ids = PromptEmbedder(tiny_gen).word_ids([a, b, c])
    assert ids[0, 2] == ids[1, 2] != 0 and ids[0, 2] != ids[2, 2]  # "golden" == "golden" != "grey"
    assert (ids[:, 0] == 0).all() and tiny_gen.tokenizer.unknown_words(a) == ["golden", "retriever", "runs", "face", "camera"]
    overlap = word_overlap(ids[:1], ids[None, 1:2], np.zeros(1, int))[0, 0]
    assert overlap[2:4].tolist() == [1.0, 1.0] and overlap.sum() == 3  # golden, retriever and "the"


def naming_task(n: int, g: torch.Generator, d: int = 16):
    """Rows of a prompt "name action background" and four candidates, one per earlier scene:
    the target's scene named the same character; a decoy's scene shared the background and
    often the action. Word embeddings come from one fixed table, as in a real text encoder."""
    table = torch.randn(20, d, generator=torch.Generator().manual_seed(99))  # ids 0-3 names, 4-9 backgrounds, 10-19 actions
    name, bg, act = torch.randint(4, (n,), generator=g), torch.randint(4, 10, (n,), generator=g), torch.randint(10, 20, (n,), generator=g)
    now = torch.stack([name, act, bg], 1)  # (n, 3)
    other = lambda: (name + torch.randint(1, 4, (n,), generator=g)) % 4  # noqa: E731 - another character
    scenes = torch.stack([
        torch.stack([name, torch.randint(10, 20, (n,), generator=g), (bg - 4 + torch.randint(1, 6, (n,), generator=g)) % 6 + 4], 1),
        torch.stack([other(), act, bg], 1),
        torch.stack([other(), torch.randint(10, 20, (n,), generator=g), bg], 1),
        torch.stack([other(), torch.randint(10, 20, (n,), generator=g), torch.randint(4, 10, (n,), generator=g)], 1),
    ], 1)  # fmt: skip  # (n, 4 scenes, 3)
    order = torch.argsort(torch.rand(n, 4, generator=g), -1)  # candidate c comes from scene order[:, c]
    mask = torch.ones(n, 3, dtype=torch.bool)
    overlap = torch.cat([word_overlap(now[i : i + 1] + 1, scenes[i : i + 1] + 1, order[i].numpy()) for i in range(n)])  # ids > 0: words
    first = torch.cat([first_mention(overlap[i : i + 1], order[i].numpy()) for i in range(n)])
    feats = torch.cat([torch.randn(n, 4, d + N_EXTRA, generator=g), overlap, first], -1)
    return feats, table[now], mask, torch.argmin(order, -1)  # the target: the candidate from scene 0


def fit_and_score(task) -> float:
    """A fresh policy fitted to ``task``'s targets (60 Adam steps of 64 rows), then the share of 400
    new rows whose top pick is the target."""
    policy = SelectionPolicy(PolicyConfig(d_feature=16, d_prompt=16, d_model=16, n_heads=2, hidden=32))
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    for _ in range(60):
        feats, prompt, mask, target = task(64, g)
        loss = -plackett_luce_log_prob(policy(feats, prompt, mask), target[:, None]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    feats, prompt, mask, target = task(400, g)
    with torch.no_grad():
        picked = top_k(policy(feats, prompt, mask), 1)[:, 0]
    return (picked == target).float().mean().item()


def test_the_policy_learns_which_shared_prompt_word_names_the_subject():
    assert fit_and_score(naming_task) > 0.95  # chance 1/4; "most shared words" picks the decoy


def return_task(n: int, g: torch.Generator, d: int = 16):
    """A third visit: prompt "name action background" and one candidate per earlier scene (scene c
    -> candidate c); two scenes had the very prompt of now, and the target is the earlier one (the
    character's first appearance): the word overlap cannot tell them apart."""
    table = torch.randn(20, d, generator=torch.Generator().manual_seed(98))  # ids 0-3 names, 4-9 backgrounds, 10-19 actions
    name, bg, act = torch.randint(4, (n,), generator=g), torch.randint(4, 10, (n,), generator=g), torch.randint(10, 20, (n,), generator=g)
    now = torch.stack([name, act, bg], 1)  # (n, 3)
    scenes = torch.stack([(name[:, None] + torch.randint(1, 4, (n, 4), generator=g)) % 4, torch.randint(10, 20, (n, 4), generator=g),
                          torch.randint(4, 10, (n, 4), generator=g)], -1)  # fmt: skip  # (n, 4 scenes, 3): other characters
    pair = torch.argsort(torch.rand(n, 4, generator=g), -1)[:, :2].sort(-1).values  # (n, 2) the character's two scenes, in order
    rows = torch.arange(n)
    scenes[rows, pair[:, 0]] = now
    scenes[rows, pair[:, 1]] = now
    overlap = torch.cat([word_overlap(now[i : i + 1] + 1, scenes[i : i + 1] + 1, np.arange(4)) for i in range(n)])  # ids > 0: words
    feats = torch.cat([torch.randn(n, 4, d + N_EXTRA, generator=g), overlap, first_mention(overlap, np.arange(4))], -1)
    return feats, table[now], torch.ones(n, 3, dtype=torch.bool), pair[:, 0]


def test_the_policy_learns_to_copy_a_returning_character_from_its_first_appearance():
    assert fit_and_score(return_task) > 0.95  # without first mentions, 1/2 at best
