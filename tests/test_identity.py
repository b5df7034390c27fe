"""Identity reward: the shipped ArcFace ONNX and user models load through insightface offline;
frames without a subject are dropped and counted; unscorable scenes are masked with a reason."""

import warnings

import numpy as np
import pytest
import torch

from inflvg.config import WorldConfig
from inflvg.world.render import background
from inflvg.world.story import render_story, sample_story
from reward_actors.identity import DEFAULT_RECOGNITION, IdentityScorer
from reward_actors.train_identity import IdentityNet, export_onnx, to_input
from reward_actors.types import SceneBatch


@pytest.fixture(scope="module")
def story_scenes():
    """A held-out story: (story, list of (4, 32, 32, 3) uint8 scenes)."""
    world = WorldConfig(n_scenes=8, cast_size=3)
    story = sample_story(3, "heldout", world.n_scenes, world.cast_size)
    video = render_story(story, world)
    return story, [video.frames[video.scene == j] for j in range(world.n_scenes)]


@pytest.fixture(scope="module")
def random_pack(tmp_path_factory):
    """A user's model-pack folder: a random recognition CNN exported to ONNX, plus an ONNX file
    insightface does not route to recognition (32x32 input), as packs hold several models."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("pack")
    net = IdentityNet(dim=16, width=4).eval()
    export_onnx(net, folder / "w600k_tiny.onnx")
    small = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(small, (torch.zeros(1, 3, 32, 32),), str(folder / "a_other.onnx"), dynamo=False)
    return folder, net


class SaturationDetector(torch.nn.Module):
    """A stand-in SCRFD (9 outputs: scores, boxes, keypoints at strides 8, 16, 32; 2 anchors):
    faces are saturated regions, boxes 2 strides wide, keypoints ArcFace's template layout."""

    def forward(self, x):  # (1, 3, 64, 64), normalised as insightface does
        sat = x.max(1, keepdim=True).values - x.min(1, keepdim=True).values  # (1, 1, 64, 64)
        outs = [[], [], []]
        template = (torch.tensor([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]]) - 56.0) / 56.0
        for s in (8, 16, 32):
            score = torch.sigmoid(20 * (torch.nn.functional.avg_pool2d(sat, s) - 0.9)).flatten()  # (64/s)^2
            n = score.numel() * 2
            outs[0].append(score.repeat_interleave(2)[:, None])  # (n, 1)
            outs[1].append(torch.ones(n, 4) + 0 * score.sum())  # (n, 4) distances in strides
            outs[2].append(template.flatten().repeat(n, 1) + 0 * score.sum())  # (n, 10)
        return tuple(outs[0] + outs[1] + outs[2])


@pytest.fixture(scope="module")
def scrfd_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("det") / "scrfd_tiny_bnkps.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SaturationDetector(), (torch.zeros(1, 3, 64, 64),), str(path), dynamo=False)
    return path


@pytest.fixture(scope="module")
def shipped():
    return IdentityScorer(num_threads=1)


def test_shipped_model_loads_through_insightface_and_separates_characters(shipped, story_scenes):
    from insightface.model_zoo import get_model
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    model = get_model(str(DEFAULT_RECOGNITION))
    assert isinstance(model, ArcFaceONNX) and (model.input_mean, model.input_std) == (127.5, 127.5)
    story, scenes = story_scenes
    same, diff = [], []
    for j, sc in enumerate(story.scenes):
        for k in range(j):
            (same if story.scenes[k].character == sc.character else diff).append((j, k))
    pairs = same + diff
    res = shipped.score(SceneBatch([scenes[j] for j, _ in pairs], ["p"] * len(pairs), [scenes[k] for _, k in pairs]))
    assert res.valid.all() and np.all((res.scores >= 0) & (res.scores <= 1))
    assert res.scores[: len(same)].min() > res.scores[len(same) :].max()
    assert len(res.version) == 12 and res.model == "arcface:identity_storyworld"


def test_user_model_pack_loads_as_a_user_would(random_pack, story_scenes):
    folder, net = random_pack
    _, scenes = story_scenes
    for path in (str(folder), str(folder / "w600k_tiny.onnx")):
        scorer = IdentityScorer(recognition=path, num_threads=1)
        assert scorer.name == "arcface:w600k_tiny"
        crop = scorer.detector.crop(scenes[0][0])
        with torch.no_grad():
            expected = torch.nn.functional.normalize(net(to_input([crop])), dim=1).numpy()
        np.testing.assert_allclose(scorer.embed([crop]), expected, atol=1e-4)
        res = scorer.score(SceneBatch([scenes[0], scenes[1]], ["a", "b"], [scenes[2], scenes[3]]))
        assert res.valid.all() and np.all((res.scores >= 0) & (res.scores <= 1))


def test_manifest_v2_model_pack_loads_its_recognition_task(random_pack, tmp_path, story_scenes):
    import hashlib
    import json
    import shutil

    onnx = tmp_path / "w600k_tiny.onnx"
    shutil.copy(random_pack[0] / "w600k_tiny.onnx", onnx)
    (tmp_path / "MODEL.LICENSE").write_text("test weights\n")
    task = {"file": onnx.name, "sha256": hashlib.sha256(onnx.read_bytes()).hexdigest(), "embedding_dimension": 16}
    manifest = {"manifest_version": 2, "model_id": "tiny_pack", "license": "MODEL.LICENSE", "tasks": {"recognition": task}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    scorer = IdentityScorer(recognition=str(tmp_path), num_threads=1)
    reference = IdentityScorer(recognition=str(onnx), num_threads=1)
    _, scenes = story_scenes
    batch = SceneBatch([scenes[0]], ["a"], [scenes[1]])
    assert scorer.score(batch).scores == pytest.approx(reference.score(batch).scores, abs=1e-6)


@pytest.mark.parametrize("as_folder", [False, True])
def test_insightface_detector_from_a_local_file_or_pack(random_pack, scrfd_file, story_scenes, as_folder):
    _, scenes = story_scenes
    path = scrfd_file.parent if as_folder else scrfd_file
    scorer = IdentityScorer(recognition=str(random_pack[0]), detector=str(path), num_threads=1)
    crop = scorer.detector.crop(scenes[0][0])
    assert crop is not None and crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert scorer.detector.crop(np.repeat(background("snow", 32)[None], 1, 0)[0]) is None
    res = scorer.score(SceneBatch([scenes[0]], ["a"], [scenes[1]]))
    assert res.valid.all() and res.counts["frames_without_subject"] == 0


def test_missing_files_are_clear_errors(tmp_path, random_pack):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        IdentityScorer(recognition=str(tmp_path / "antelopev2"))
    with pytest.raises(FileNotFoundError, match="insightface detector not found"):
        IdentityScorer(recognition=str(random_pack[0]), detector=str(tmp_path / "scrfd_10g_bnkps.onnx"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no insightface recognition model"):
        IdentityScorer(recognition=str(tmp_path / "empty"))


def test_frames_without_subject_are_dropped_and_counted(random_pack, story_scenes):
    scorer = IdentityScorer(recognition=str(random_pack[0]), num_threads=1)
    _, scenes = story_scenes
    empty = np.repeat(background("desert", 32)[None], 2, 0)
    new = np.concatenate([scenes[0][:2], empty, scenes[0][2:]])  # frames 2, 3 show no one
    res = scorer.score(SceneBatch([new, scenes[0]], ["a", "b"], [scenes[1], scenes[1]]))
    assert res.counts["frames_without_subject"] == 2
    assert res.scores[0] == pytest.approx(res.scores[1], abs=1e-6)  # the same 4 subject frames compared


def test_unscorable_scenes_are_masked_with_a_reason(random_pack, story_scenes):
    scorer = IdentityScorer(recognition=str(random_pack[0]), num_threads=1)
    _, scenes = story_scenes
    empty = np.repeat(background("night", 32)[None], 3, 0)
    batch = SceneBatch([scenes[0], scenes[1], empty, scenes[2]], ["a", "b", "c", "d"], [None, empty, scenes[0], scenes[3]])
    res = scorer.score(batch)
    assert res.reasons[:3] == ["no history", "no subject detected in the history", "no subject detected in the new scene"]
    assert list(res.valid) == [False, False, False, True] and np.isnan(res.scores[:3]).all()
    assert res.counts["frames_without_subject"] == 6
    assert scorer.score(SceneBatch([scenes[0]], ["a"])).reasons == ["no history"]


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (np.zeros((2, 32, 32, 3), np.float32), "uint8"),
        (np.zeros((32, 32, 3), np.uint8), "shape"),
        (np.zeros((0, 32, 32, 3), np.uint8), "no frames"),
    ],
)
def test_bad_input_is_a_value_error(frames, match, story_scenes):
    with pytest.raises(ValueError, match=match):
        SceneBatch([frames], ["a"], [story_scenes[1][0]])
    with pytest.raises(ValueError, match=match):
        SceneBatch([story_scenes[1][0]], ["a"], [frames])


def test_arcface_loss_matches_a_hand_computation():
    from reward_actors.train_identity import ArcFaceLoss

    arc = ArcFaceLoss(dim=2, n_classes=2, scale=10.0, margin=0.5)
    with torch.no_grad():
        arc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    emb = torch.tensor([[3.0, 4.0]])  # cos to class 0 = 0.6, to class 1 = 0.8
    target = np.cos(np.arccos(0.6) + 0.5)  # the margin is added to the own class's angle
    expected = -np.log(np.exp(10 * target) / (np.exp(10 * target) + np.exp(10 * 0.8)))
    assert arc(emb, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)


def test_generator_crops_are_labelled_by_the_readers_and_held_out_identities_left_out():
    from reward_actors.detector import StoryWorldDetector
    from reward_actors.identity_data import label_scenes
    from reward_actors.train_identity import identities

    world = WorldConfig(n_scenes=6, cast_size=3)
    classes = identities("train")
    index = {c: i for i, c in enumerate(classes)}
    train, held = (sample_story(5, split, world.n_scenes, world.cast_size) for split in ("train", "heldout"))
    frames = np.stack([render_story(s, world).frames for s in (train, held)])  # clean renders read exactly
    crops, labels, kept, skipped = label_scenes([train, held], frames, world.frames_per_scene, index, StoryWorldDetector())
    assert (kept, skipped) == (6, 6)  # every held-out scene is left out
    expected = [index[train.cast[sc.character]] for sc in train.scenes for _ in range(world.frames_per_scene)]
    assert labels == expected and len(crops) == len(labels)
    assert all(c.dtype == np.uint8 and c.shape[0] == c.shape[1] for c in crops)
