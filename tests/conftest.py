import pytest
import torch

from inflvg.config import ContextConfig, GeneratorConfig, WorldConfig


@pytest.fixture(autouse=True)
def one_thread():
    """Intra-op threads fight over busy cores (10-60x slower with 2 threads on a loaded 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray on loopback for one test module."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny():
    """A tiny real generator (random weights): hidden 32, 2 layers."""
    from inflvg.generator.model import Generator

    torch.manual_seed(0)
    torch.set_num_threads(1)
    world = WorldConfig(n_scenes=4, cast_size=3)
    gen = GeneratorConfig(d_model=32, n_heads=2, n_layers=2, d_text=32, text_layers=1, denoise_steps=2, horizon_frames=16)
    model = Generator(gen, world.frame_size).eval()
    return model, world, ContextConfig(budget_k=8, window_frames=2)


@pytest.fixture(scope="session")
def lively(tiny):
    """The tiny generator with its zero-initialised gates and output made random: a fresh one
    ignores noise and context (zero gates), so neither could change its frames."""
    import copy

    model, world, ctx = tiny
    gen = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for lin in [b.ada for b in gen.blocks] + [gen.ada_out, gen.out]:
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.2)
    return gen, world, ctx


@pytest.fixture(scope="session")
def tiny_gen(tiny):
    """The tiny generator behind the generator protocol (``inflvg.protocol.Generator``)."""
    from inflvg.generator.backend import StoryWorldGenerator

    return StoryWorldGenerator(*tiny)


@pytest.fixture(scope="session")
def lively_gen(lively):
    """``lively`` behind the generator protocol."""
    from inflvg.generator.backend import StoryWorldGenerator

    return StoryWorldGenerator(*lively)


# --- markers: every test gets `unit`, or `ray` and/or `browser`; `slow` on top where measured ---
#
# ray: the test needs a Ray of its own, through one of these fixtures (directly or through a
#   fixture built on them, e.g. serving_api's `server`, cluster's `reference`) or ray.init in its body.
RAY_FIXTURES = {
    "ray_local",  # this file: ray.init(address="local") for a module
    "own_ray",  # test_serving_api: the same, for Ray Serve
    "ray_head",  # test_cluster: `ray start --head` in a subprocess, jobs through `ray job submit`
    "cli_server",  # test_serving_cli: `python -m serving`, which starts Ray Serve
    "serve_from_manifest",  # test_deploy: `serve run` of the RayService's Serve config, on a Ray of its own
    "three_nodes",  # test_multinode: ray.cluster_utils.Cluster, three nodes on this machine
}
# browser: drives the system Chromium through selenium.
# slow: 3 s or more each (setup included) in a `--durations=0` run of the whole suite on the
#   shared 2-core machine; parametrized tests by function name. Ray and browser tests are left
#   out of `unit` whatever their time, so only the in-process slow ones need naming to keep
#   `make test-fast` (-m "unit and not slow") short; the Ray ones over 3 s are named too.
SLOW = {
    "test_alignment.py::test_default_loads_offline_and_prefers_the_true_background",
    "test_bench.py::test_a_killed_benchmark_takes_its_workers_with_it",
    "test_bench.py::test_bench_on_a_free_text_file_refuses_oracle_and_measures_the_rest",
    "test_bench.py::test_bench_on_a_storyworld_prompt_file",
    "test_bench.py::test_bench_quality_at_4x_has_a_block_per_length_and_drift_curves",
    "test_bench.py::test_bench_with_a_policy_adds_learned_with_the_same_keys",
    "test_bench.py::test_bench_writes_json_table_and_plot",
    "test_bench.py::test_strategies_share_noise_at_every_length",
    "test_bench.py::test_timing_reads_every_length_from_one_long_video",
    "test_bench.py::test_workers_give_the_same_videos_as_one_process",
    "test_cluster.py::test_a_bad_prompt_file_fails_before_anything_starts",
    "test_cluster.py::test_a_free_text_prompt_file_trains_through_ray_job_submit",
    "test_cluster.py::test_a_killed_driver_resumes_to_the_weights_of_an_undisturbed_run",
    "test_cluster.py::test_actors_killed_mid_step_lose_and_double_nothing",
    "test_cluster.py::test_debug_preset_via_ray_job_submit",
    "test_cluster.py::test_the_wan_backend_trains_through_ray_job_submit",
    "test_cluster.py::test_two_hybrid_ranks_train_as_the_one_learner_did_through_kills",
    "test_deploy.py::test_the_rayjob_entrypoint_trains_the_debug_preset_through_ray_job_submit",
    "test_deploy.py::test_the_rayservice_serve_config_answers_http",
    "test_hybrid.py::test_a_checkpoint_over_two_ranks_restores_in_a_new_world",
    "test_hybrid.py::test_ranks_step_to_the_same_weights_and_act_with_them",
    "test_hybrid.py::test_two_ranks_compute_the_gradient_of_one_and_hold_half_its_optimizer_state",
    "test_history.py::test_untagged_storyworld_reward_prefers_the_named_character_over_the_nearest_earlier_one",
    "test_learner.py::test_learner_as_a_ray_actor_serves_weights_through_the_object_store",
    "test_learner.py::test_refinement_takes_the_learners_update",
    "test_overrides.py::test_the_cli_rejects_a_bad_override_before_starting_ray",
    "test_protocol.py::test_frames_are_bit_identical_to_the_pre_protocol_generator",
    "test_quality.py::test_scores_scene_by_scene_agree_with_the_video_means_and_drift_pads_shorter_videos",
    "test_quality.py::test_truth_scores_full_marks_and_a_wrong_return_is_counted",
    "test_readers.py::test_artifact_score_flags_corruptions",
    "test_readers.py::test_readers_check_cli_writes_json",
    "test_reward_group.py::test_group_matches_local_scores_and_uses_the_cache",
    "test_reward_group.py::test_killed_actor_mid_batch_every_score_exactly_once",
    "test_rollout_workers.py::test_a_group_shares_noise_and_differs_by_selection",
    "test_rollout_workers.py::test_ray_group_matches_in_process_rollouts_in_order",
    "test_rollout_workers.py::test_replica_killed_mid_call_is_reissued_once",
    "test_rollout_workers.py::test_the_driver_writes_a_steps_scored_rollouts_without_frames",
    "test_serving_api.py::test_fuzzing_from_the_openapi_schema_finds_no_server_error",
    "test_serving_api.py::test_health_and_models",
    "test_serving_api.py::test_policy_loads_from_every_kind_of_mlflow_uri",
    "test_serving_api.py::test_web_page_plays_the_video_in_headless_chromium",
    "test_serving_cli.py::test_cli_serves_a_video_of_free_text",
    "test_serving_cli.py::test_request_past_its_timeout_gets_504_and_the_server_goes_on",
    "test_serving_cli.py::test_sigint_stops_the_server",
    "test_multinode.py::test_the_learners_node_dies_and_the_run_completes_through_storage",
    "test_signals.py::test_a_background_entry_point_stops_on_a_signal_and_leaves_no_ray",
    "test_wan.py::test_the_scale_benchmark_reports_block_cost_and_kv_bytes",
}


def _body(item) -> str:
    import inspect

    try:
        return inspect.getsource(item.function)
    except (AttributeError, OSError, TypeError):
        return ""


def pytest_collection_modifyitems(config, items):
    for item in items:
        body = _body(item)
        is_ray = bool(RAY_FIXTURES & set(item.fixturenames)) or "ray.init(" in body
        is_browser = "webdriver" in body
        if is_ray:
            item.add_marker(pytest.mark.ray)
        if is_browser:
            item.add_marker(pytest.mark.browser)
        if not (is_ray or is_browser):
            item.add_marker(pytest.mark.unit)
        if f"{item.path.name}::{item.originalname}" in SLOW:
            item.add_marker(pytest.mark.slow)
