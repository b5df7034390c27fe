"""The benchmark CLI end to end on a tiny saved generator, and its errors on bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from inflvg.bench.quality import METRICS
from inflvg.generator.weights import save_generator
from inflvg.prompts import PromptSet, load_prompts, save_prompts
from inflvg.world import prompt_set_of, sample_story


def saved(generator: tuple, tmp_path_factory, name: str) -> Path:
    """A conftest generator (model, world, ctx) written as a weights file."""
    path = tmp_path_factory.mktemp("w") / name
    save_generator(*generator, path, {"steps": 0})
    return path


@pytest.fixture(scope="module")
def weights(tiny, tmp_path_factory):
    return saved(tiny, tmp_path_factory, "tiny.pt")


def bench(*args):
    return subprocess.run([sys.executable, "-m", "inflvg.bench", *map(str, args)], check=False, capture_output=True, text=True, timeout=600)


def test_bench_writes_json_table_and_plot(weights, tmp_path):
    out = tmp_path / "b.json"
    r = bench("--weights", weights, "--split", "heldout", "--seed", 1, "--videos", 3, "--lengths", "1,2",
              "--strategies", "full,window,oracle", "--timing-videos", 1, "--out", out)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert set(result["strategies"]) == {"full", "window", "oracle"}
    for entry in result["strategies"].values():
        for key in ("alignment", "identity", "artifacts", "combined"):
            assert 0.0 <= entry[key] <= 1.0
            lo, hi = entry["ci95"][key]
            assert lo <= entry[key] <= hi
        assert set(entry["timing"]["ms_per_frame"]) == {"1", "2"}
    assert "oracle-window" in result["paired"]
    assert out.with_suffix(".md").read_text().startswith("| strategy |")
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "100%|" in r.stderr  # tqdm's progress bar is shown (tasks done; frames done with one worker)


def test_bench_with_a_policy_adds_learned_with_the_same_keys(weights, tiny, tmp_path):
    from inflvg.policy import PolicyConfig, SelectionPolicy, save_policy

    d = tiny[0].cfg.d_model
    save_policy(SelectionPolicy(PolicyConfig(d_feature=d, d_prompt=d, d_model=16, n_heads=2, hidden=32)), tmp_path / "policy.pt")
    out = tmp_path / "l.json"
    r = bench("--weights", weights, "--split", "heldout", "--seed", 2, "--videos", 2, "--lengths", "1",
              "--strategies", "random,oracle", "--policy", tmp_path / "policy.pt", "--out", out)  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert set(result["strategies"]["learned"]) == set(result["strategies"]["random"])
    assert {"learned-random", "learned-oracle"} <= set(result["paired"]) and result["gap_closed"]["best_heuristic"] == "random"
    assert result["gap_closed_budgeted"]["best_heuristic"] == "random"
    assert "of the combined gap" in out.with_suffix(".md").read_text()
    assert len(result["per_video"]["learned"]["combined"]) == 2


def test_workers_give_the_same_videos_as_one_process(weights, tmp_path):
    results = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}.json"
        r = bench("--weights", weights, "--split", "heldout", "--seed", 3, "--videos", 2, "--lengths", "1",
                  "--strategies", "window,random,oracle", "--workers", workers, "--out", out)  # fmt: skip
        assert r.returncode == 0, r.stderr
        results.append(json.loads(out.read_text()))
    assert results[1]["config"]["workers"] == 2
    assert results[0]["per_video"] == results[1]["per_video"]
    assert list(results[0]["strategies"]) == list(results[1]["strategies"]) == ["window", "random", "oracle"]


def test_gap_closed_against_hand_computed_values():
    from inflvg.bench.run import BUDGETED, gap_closed

    tables = {
        "window": {"combined": np.array([0.40, 0.50, 0.60])},
        "random": {"combined": np.array([0.50, 0.60, 0.70])},  # best heuristic: mean 0.60
        "oracle": {"combined": np.array([0.70, 0.80, 0.90])},  # mean 0.80
        "learned": {"combined": np.array([0.65, 0.75, np.nan])},  # the NaN video drops out of all three
    }
    gap = gap_closed(tables)
    assert gap["best_heuristic"] == "random"
    assert gap["fraction"] == pytest.approx((0.70 - 0.55) / (0.75 - 0.55))  # 0.75
    assert gap["ci95"][0] <= gap["fraction"] <= gap["ci95"][1]
    tables["full"] = {"combined": np.array([0.72, 0.72, 0.72])}
    assert gap_closed(tables)["best_heuristic"] == "full"
    assert gap_closed(tables, candidates=BUDGETED)["best_heuristic"] == "random"


def test_bench_on_a_storyworld_prompt_file(weights, tmp_path):
    prompts = tmp_path / "p.jsonl"
    save_prompts([prompt_set_of(sample_story(i, "train", 4, 3), f"p{i}") for i in range(2)], prompts)
    out = tmp_path / "p.json"
    r = bench("--weights", weights, "--prompts", prompts, "--seed", 0, "--lengths", "1", "--strategies", "sink_window,oracle",
              "--timing-videos", 1, "--out", out)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert result["config"]["videos"] == 2 and result["config"]["ground_truth"] == 1.0
    assert result["strategies"]["oracle"]["character"] >= 0  # the grammar carries the ground truth the readers need


def test_bench_on_a_free_text_file_refuses_oracle_and_measures_the_rest(weights, tmp_path):
    prompts = tmp_path / "free.jsonl"
    short = PromptSet("short", ("A red kite dips over the dunes", "A boy runs after it", "The red kite lands in the sand"))
    save_prompts([*load_prompts("tests/data/free_text.jsonl")[:2], short], prompts)  # scene counts 6, 6, 3: batched by count
    r = bench("--weights", weights, "--prompts", prompts, "--strategies", "window,oracle", "--out", tmp_path / "x.json")
    assert r.returncode != 0 and "'oracle' reads StoryWorld's ground truth, and prompt set 'free-0' has none" in r.stderr
    out = tmp_path / "free.json"
    r = bench("--weights", weights, "--prompts", prompts, "--lengths", "1", "--out", out)  # default: every strategy the prompts allow
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert "oracle" not in result["strategies"] and "prompt_match" in result["strategies"]
    assert result["config"]["ground_truth"] == 0.0 and result["strategies"]["window"]["identity"] >= 0
    assert len(result["per_video"]["window"]["identity"]) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategies", "window,best"], "unknown strategy 'best'"),
        (["--budget-k", "0"], "--budget-k must be a positive integer, got 0"),
        (["--budget-k", "four"], "--budget-k expects {None}|INT"),
        (["--weights", "/nonexistent/g.pt"], "generator weights not found at '/nonexistent/g.pt'"),
    ],
)
def test_bench_bad_input_names_the_problem(args, message, tmp_path):
    r = bench(*args, "--out", tmp_path / "x.json")
    assert r.returncode != 0
    assert message in r.stderr
    assert not (tmp_path / "x.json").exists()


def test_bench_malformed_prompt_row(weights, tmp_path):
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text('{"0": "a dog runs"}\n{"0": "a dog runs", "1": ""}\n')
    r = bench("--weights", weights, "--prompts", prompts, "--out", tmp_path / "x.json")
    assert r.returncode != 0
    assert "bad.jsonl:2, key '1': the prompt is empty" in r.stderr


PARENT = """
import multiprocessing as mp, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from inflvg.bench.parallel import _worker_init
with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
    print(pool.submit(os.getpid).result(), flush=True)
    time.sleep(600)
"""


def test_a_killed_benchmark_takes_its_workers_with_it():
    import os
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    os.kill(worker, 0)  # alive while its benchmark runs
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(worker, signal.SIGKILL)
    raise AssertionError("the worker outlived its killed benchmark")


def test_timing_reads_every_length_from_one_long_video(tiny, tiny_gen):
    """Length L's context tokens and KV bytes equal those of a separate L-horizon video (a shorter
    video is a prefix of the long one), and every length has a ratio against the 1x frames made
    alongside it."""
    from inflvg.bench.run import BenchSetup, run_timing
    from inflvg.context import make_strategy
    from inflvg.generate import generate

    _, world, ctx = tiny
    setup = BenchSetup(tiny_gen, ctx, seed=4)
    for name in ("full", "window", "random"):
        timing = run_timing(setup, make_strategy(name), [1, 2, 3])
        for mult in (1, 2, 3):
            ps = prompt_set_of(sample_story(4 + 10_000, "heldout", world.n_scenes * mult, 4), "t")
            alone = generate(tiny_gen, [ps], make_strategy(name), seed=4)
            assert timing["context_tokens"][str(mult)] == alone.context_tokens.max()
            if name != "full":
                assert timing["kv_bytes_per_transition"][str(mult)] == np.mean(alone.gathered_bytes[1:])
                assert timing["history_kv_bytes_per_transition"][str(mult)] == np.mean(alone.history_bytes[1:])
            assert timing["ms_per_frame"][str(mult)] > 0 and timing["ms_ratio_to_1x"][str(mult)] > 0
        assert timing["ms_ratio_longest_to_1x"] == timing["ms_ratio_to_1x"]["3"]
    assert timing["history_kv_bytes_per_transition"]["3"] > timing["kv_bytes_per_transition"]["3"]


@pytest.mark.parametrize("mult", [4, 9, 16])
def test_long_stories_have_a_cast_of_8_and_returns_5_scenes_apart(mult):
    from inflvg.world import ground_truth, split_of
    from inflvg.world.story import return_gaps, sample_long_story

    n = 8 * mult
    for seed in range(20):
        story = sample_long_story(seed, "heldout", n)
        assert len(story.scenes) == n and len(story.cast) >= 8 and {sc.character for sc in story.scenes} == set(range(8))
        gaps = return_gaps(story)
        assert np.median(gaps) >= 5 and min(gaps) >= 5  # every return needs memory beyond the last 4 scenes
        assert all(split_of(c) == "heldout" for c in story.cast)
        assert sample_long_story(seed, "heldout", n) == story  # deterministic per seed
        parsed = ground_truth(prompt_set_of(story, "s"))
        assert parsed is not None and parsed.scenes == story.scenes  # the prompts carry all 8 letters
    assert sample_long_story(0, "heldout", n) != sample_long_story(1, "heldout", n)


def test_quality_lengths_defaults_and_what_is_left_out():
    from inflvg.bench.__main__ import parse_args, strategy_names

    args = parse_args(["--quality-lengths", "16,1,4,9"])
    assert args.quality_list == [1, 4, 9, 16] and [args.videos_at(L) for L in (1, 4, 9, 16)] == [64, 32, 16, 16]
    assert parse_args(["--quality-lengths", "1,16", "--videos", "5"]).videos_at(16) == 5
    ps = [prompt_set_of(sample_story(0, "heldout", 8, 4), "s")]
    assert "full" not in strategy_names(None, ps, [16]) and "full" in strategy_names(None, ps, [8, 16])
    with pytest.raises(ValueError, match="'full' is left out of quality beyond 8x"):
        strategy_names(["full", "window"], ps, [9])
    with pytest.raises(SystemExit):
        parse_args(["--prompts", "p.jsonl", "--quality-lengths", "1,4"])


def test_long_stories_from_draws_shorter_lengths_as_long_stories(tiny_gen):
    from inflvg.bench.__main__ import bench_prompt_sets, parse_args
    from inflvg.world.story import sample_long_story

    scenes = 2 * tiny_gen.spec.horizon_frames // tiny_gen.spec.frames_per_scene
    alike = bench_prompt_sets(parse_args(["--quality-lengths", "2", "--videos", "2", "--long-stories-from", "2"]), tiny_gen)
    assert alike[2][1] == [sample_long_story(seed, "heldout", scenes) for seed in (0, 1)]
    default = bench_prompt_sets(parse_args(["--quality-lengths", "2", "--videos", "2"]), tiny_gen)
    assert all(len(story.cast) == 4 for story in default[2][1])  # below 4x: the training stories' kind
    with pytest.raises(SystemExit):
        parse_args(["--long-stories-from", "0"])


def test_bench_quality_at_4x_has_a_block_per_length_and_drift_curves(weights, tmp_path):
    out = tmp_path / "q.json"
    r = bench("--weights", weights, "--split", "heldout", "--seed", 5, "--videos", 2, "--quality-lengths", "1,4", "--lengths", "1",
              "--strategies", "window,oracle", "--workers", 1, "--out", out)  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert result["config"]["scenes_by_length"] == {"1": 4, "4": 16} and result["config"]["videos_by_length"] == {"1": 2, "4": 2}
    for entry in result["strategies"].values():
        assert set(entry["by_length"]) == {"1", "4"}
        for key in METRICS:  # the top level stays the 1x figures
            assert entry[key] == pytest.approx(entry["by_length"]["1"][key], nan_ok=True)
        block = entry["by_length"]["4"]
        assert {"alignment", "identity", "artifacts", "combined", "character", "returns"} <= set(block)
        for key in METRICS:
            lo, hi = block["ci95"][key]
            assert lo <= block[key] <= hi
            curve, band = block["drift"][key], block["drift"]["ci95"][key]
            assert len(curve) == len(band) == 16  # one point per scene of a 4x video
            for mean, (lo, hi) in zip(curve, band, strict=True):
                assert mean is None or lo <= mean <= hi
        assert block["drift"]["identity"][0] is None  # the first scene is nobody's return
        assert entry["by_length"]["1"]["identity_drift"] is None and block["identity_drift"]["late_from"] == 9  # 4 scenes, then 16
        visits = block["returns_by_visit"]
        assert set(visits) == {"1", "2", "3+"} and all(v is None or v["ci95"][0] <= v["mean"] <= v["ci95"][1] for v in visits.values())
    assert set(result["paired_by_length"]["4"]) == {"oracle-window"}
    md = out.with_suffix(".md").read_text()
    assert "| 4x | oracle | 2 |" in md and "| on returns, among 4 |" in md
    assert all(len(set(table)) == 1 for table in cells_per_table(md))  # every row as wide as its header
    assert (tmp_path / "q_drift.png").stat().st_size > 1000


def cells_per_table(md: str) -> list[list[int]]:
    """Each markdown table's rows, as counts of their cell separators."""
    tables, rows = [], []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            rows.append(line.count("|"))
        elif rows:
            tables, rows = [*tables, rows], []
    return tables


@pytest.fixture(scope="module")
def lively_weights(lively, tmp_path_factory):
    """Weights whose frames depend on the noise and the context (``lively``)."""
    return saved(lively, tmp_path_factory, "lively.pt")


def test_strategies_share_noise_at_every_length(lively_weights, tmp_path, monkeypatch):
    """'random' made as 'window' in the workers gives window's very videos at 1x and 4x: every
    strategy's batches get the same noise (``lively``'s frames depend on it)."""
    from inflvg.bench import __main__ as bench_main
    from inflvg.bench import parallel
    from inflvg.context import make_strategy

    monkeypatch.setattr(parallel, "make_strategy", lambda name: make_strategy("window" if name == "random" else name))
    result = bench_main.main(["--weights", str(lively_weights), "--seed", "6", "--videos", "1", "--quality-lengths", "1,4",
                              "--lengths", "1", "--strategies", "window,random", "--workers", "1", "--out", str(tmp_path / "n.json")])  # fmt: skip
    same = result["strategies"]
    for L in ("1", "4"):
        assert json.dumps(same["window"]["by_length"][L]) == json.dumps(same["random"]["by_length"][L])  # NaN == NaN as text
    assert result["per_video"]["window"] == result["per_video"]["random"]


def test_rope_scaling_turns_flex_on_and_off_and_only_where_it_exists(tiny_gen):
    """--rope-scaling (the FLEX ablation): past the horizon FLEX interpolates the slow temporal
    components, 'none' extrapolates them; within the horizon the two agree. Wan has no such setting."""
    import copy

    from inflvg.bench.parallel import with_rope_scaling
    from inflvg.protocol import load_backend

    flex, none = copy.deepcopy(tiny_gen), copy.deepcopy(tiny_gen)
    with_rope_scaling(flex, "flex")
    with_rope_scaling(none, "none")
    horizon = tiny_gen.model.cfg.horizon_frames
    assert torch.equal(flex.model.t_freqs(horizon), none.model.t_freqs(horizon))
    assert not torch.equal(flex.model.t_freqs(16 * horizon), none.model.t_freqs(16 * horizon))
    with pytest.raises(ValueError, match="storyworld backend"):
        with_rope_scaling(load_backend("wan-tiny"), "none")


def test_pairs_at_a_length_are_oracle_and_learned_against_every_other():
    """Hand-computed: learned [0.9, 0.7] minus window [0.5, 0.5] is +0.3 on average."""
    from inflvg.bench.__main__ import pairs_at

    table = lambda v: {m: np.array(v) for m in METRICS}  # noqa: E731
    pairs = pairs_at({"window": table([0.5, 0.5]), "oracle": table([0.8, 0.8]), "learned": table([0.9, 0.7])})
    assert set(pairs) == {"oracle-window", "oracle-learned", "learned-window", "learned-oracle"}
    assert pairs["learned-window"]["combined"]["mean"] == pytest.approx(0.3)
    assert set(pairs_at({"window": table([0.5])})) == set()
