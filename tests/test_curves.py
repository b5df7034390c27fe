"""python -m cluster.curves: training curves against generated frames, and when a run reaches another's final value."""

import json

import numpy as np
import pytest

from cluster.curves import frames_to_reach, main, read_curve


def write_run(folder, values, frames_per_step=100):
    folder.mkdir()
    lines = [json.dumps({"step": i, "reward_identity_mean": v, "frames_generated": frames_per_step}) for i, v in enumerate(values)]
    (folder / "steps.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_curves_smooth_count_frames_and_say_when_the_target_is_reached(tmp_path, capsys):
    """Hand-computed: trailing means of 2 over [0.2, 0.4, 0.6, 0.8] are [0.2, 0.3, 0.5, 0.7]; a faster run
    [0.5, 0.9, 0.9, 0.9] smooths to [0.5, 0.7, 0.9, 0.9] and reaches 0.7 after 2 steps of 100 frames."""
    slow, fast = write_run(tmp_path / "slow", [0.2, 0.4, 0.6, 0.8]), write_run(tmp_path / "fast", [0.5, 0.9, 0.9, 0.9])
    frames, curve = read_curve(slow, "reward_identity_mean", 2)
    assert frames.tolist() == [100, 200, 300, 400] and np.allclose(curve, [0.2, 0.3, 0.5, 0.7])
    assert frames_to_reach(frames, curve, 0.95) is None
    out = tmp_path / "c.png"
    result = main([str(slow), str(fast), "--window", "2", "--out", str(out)])
    assert result["target"] == pytest.approx(0.7)
    assert result["runs"][str(slow)]["frames_to_target"] == 400 and result["runs"][str(fast)]["frames_to_target"] == 200
    assert out.stat().st_size > 1000 and json.loads(out.with_suffix(".json").read_text())["runs"][str(fast)]["final"] == pytest.approx(0.9)
    assert "| 200 |" in capsys.readouterr().out
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "steps.jsonl").write_text(json.dumps({"step": 0, "reward": 0.5}) + "\n")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "old")])
