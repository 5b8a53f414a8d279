"""Episodes on a cell without ROS: the taught goal file, the reset motion, episode results, and online episodes
with an operator who takes over or marks the outcome."""

import math

import numpy as np
import pytest

from msdp.config import ConfigError, from_dict
from msdp_perception.encoder import EncodedObservation, pack_embedding
from msdp_perception.model import MSDPConfig
from msdp_policy.episodes import (
    EpisodeResult,
    Goal,
    ResetConfig,
    ResetFailed,
    ResetMotion,
    episode_start_json,
    goal_from_pose,
    load_goal,
    save_goal,
)
from msdp_policy.online import OnlineEpisodes
from msdp_policy.replay import transition_schema
from msdp_policy.tasks import DOWN, HOLE_DEPTH, TaskConfig, tcp_yaw
from msdp_policy.transition_log import TransitionReader, TransitionWriter

MODEL = MSDPConfig(width=16, depth=1, heads=2, decoder_depth=1, decoder_width=16)
SCHEMA = transition_schema("msdp_frozen", MODEL, 4)
BOX = ((0.25, -0.35, 0.01), (0.75, 0.35, 0.65))
GOAL = Goal("peg", (0.5, 0.0, 0.02), 0.3)


def rows(value: float) -> np.ndarray:
    n = MODEL.n_tokens
    encoded = EncodedObservation(np.full((n, MODEL.width), value, np.float32), np.ones(n, bool),
                                 np.full(MODEL.width, value, np.float32))  # fmt: skip
    return pack_embedding(encoded)


# -- the goal file -------------------------------------------------------------------------------------------------
def test_a_taught_goal_survives_its_file_and_keeps_the_pose_it_was_taught_from(tmp_path):
    orientation = np.array([math.cos(0.15), math.sin(0.15), 0.0, 0.0])  # tool down, turned 0.3 rad about z
    goal = goal_from_pose("peg", np.array([0.51, -0.02, 0.03]), orientation, 12.5)
    assert goal.yaw == pytest.approx(tcp_yaw(orientation)) and goal.taught_at
    save_goal(goal, tmp_path / "cell" / "goal.yaml")
    assert load_goal(tmp_path / "cell" / "goal.yaml", "peg") == goal
    assert not list((tmp_path / "cell").glob("*.partial"))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("format: msdp-goal-1\ntask: peg\nposition: [0.5, 0.0]\nyaw: 0.0\n", "3 finite numbers"),
        ("format: msdp-goal-1\ntask: peg\nposition: [0.5, .nan, 0.1]\nyaw: 0.0\n", "3 finite numbers"),
        ("format: msdp-goal-1\ntask: peg\nposition: [0.5, 0.0, 0.1]\n", "expected task, position"),
        ("format: msdp-goal-1\ntask: peg\nposition: [0.5, 0, 0.1]\nyaw: 0\nframe: world\n", "frame 'world'"),
        ("format: msdp-goal-1\ntask: push_cube\nposition: [0.5, 0, 0.1]\nyaw: 0\n", "this run's task is 'peg'"),
        ("position: [0.5, 0, 0.1]\nyaw: 0\n", "not a goal file"),
        ("format: [unclosed\n", "cannot read it"),
    ],
)
def test_a_bad_goal_file_is_refused_naming_it(tmp_path, text, reason):
    path = tmp_path / "goal.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=reason) as error:
        load_goal(path, "peg")
    assert str(path) in str(error.value)


def test_a_missing_goal_file_is_named():
    with pytest.raises(ConfigError, match="goal file /nonexistent/goal.yaml: cannot read it"):
        load_goal("/nonexistent/goal.yaml")


# -- the reset motion --------------------------------------------------------------------------------------------
def follow(motion: ResetMotion, position: np.ndarray, lag: float = 0.5, dt: float = 0.05, limit: float = 30.0):
    """Drive a point that moves ``lag`` of the way to each target per step (an arm under impedance control)."""
    path, now = [position.copy()], 0.0
    while now < limit:
        now += dt
        step = motion.step(now, position)
        position = position + lag * (step.position - position)
        path.append(position.copy())
        if step.done:
            return np.array(path), step, now
    raise AssertionError("the reset did not finish")


def test_a_reset_lifts_out_of_the_hole_before_moving_sideways_then_rests_at_a_start_in_the_region():
    config = ResetConfig(settle_time=0.3)
    inserted = np.array([0.5, 0.0, 0.02 + 0.005])  # the peg deep in the hole
    for seed in range(5):
        motion = ResetMotion(config, GOAL, np.random.default_rng(seed), 0.0, inserted, DOWN)
        path, step, took = follow(motion, inserted.copy())
        sideways = np.linalg.norm(path[:, :2] - inserted[:2], axis=1) > 0.002
        first_sideways = int(np.argmax(sideways))
        assert path[first_sideways, 2] >= inserted[2] + config.lift - config.tolerance, "moved sideways in the hole"
        offset = path[-1] - np.array(GOAL.position)
        assert np.all(offset >= np.array(config.region_min) - 0.005) and np.all(
            offset <= np.array(config.region_max) + 0.005
        )
        assert np.linalg.norm(step.position - motion.start) < 1e-9 and took < config.timeout
        assert tcp_yaw(step.orientation) == pytest.approx(GOAL.yaw)
    starts = {tuple(np.round(ResetMotion(config, GOAL, np.random.default_rng(s), 0.0, inserted, DOWN).start, 4))
              for s in range(5)}  # fmt: skip
    assert len(starts) == 5, "resets must go to random starts"


def test_the_reset_target_moves_at_the_configured_speed():
    config = ResetConfig(speed=0.1)
    motion = ResetMotion(config, GOAL, np.random.default_rng(0), 0.0, np.array([0.5, 0.0, 0.1]), DOWN)
    previous = motion.step(0.0, np.array([0.5, 0.0, 0.1])).position
    for k in range(1, 20):
        target = motion.step(k * 0.05, np.array([0.5, 0.0, 0.1])).position  # a stuck arm: the target still moves
        assert np.linalg.norm(target - previous) <= 0.1 * 0.05 + 1e-9
        previous = target


def test_a_reset_that_cannot_finish_fails_saying_where_it_stuck():
    config = ResetConfig(timeout=2.0)
    stuck = np.array([0.5, 0.0, 0.03])
    motion = ResetMotion(config, GOAL, np.random.default_rng(0), 0.0, stuck, DOWN)
    with pytest.raises(ResetFailed, match="timed out after 2 s while lifting: tool at"):
        for k in range(100):
            motion.step(k * 0.05, stuck)  # a blocked arm never reaches the lifted waypoint


@pytest.mark.parametrize(
    ("values", "reason"),
    [({"region_min": [0.0, 0.0, 0.1], "region_max": [0.1, -0.1, 0.2]}, "region_min\\[1\\]"),
     ({"region_min": [0.0, 0.0, -0.01]}, "must be above the goal")],
)  # fmt: skip
def test_a_start_region_that_cannot_be_used_is_refused(values, reason):
    with pytest.raises(ConfigError, match=reason):
        from_dict(ResetConfig, values)


# -- episode results ---------------------------------------------------------------------------------------------------
def test_episode_results_travel_as_json_and_anything_else_is_refused():
    result = EpisodeResult(7, True, "success", 31, -2.5, interventions=4, source="policy", actor="critic_updates=9")
    assert EpisodeResult.from_json(result.to_json()) == result
    for text in (episode_start_json(7, "scripted", 1.0), "{", '{"kind": "end", "episode": 1}',
                 EpisodeResult(1, False, "exploded", 1, 0.0).to_json()):  # fmt: skip
        with pytest.raises(ValueError, match="not an episode result|ended_by"):
            EpisodeResult.from_json(text)


# -- online episodes with an operator ---------------------------------------------------------------------------------
def test_operator_steps_are_flagged_and_counted_and_act_with_the_operator_action(tmp_path):
    writer = TransitionWriter(tmp_path, SCHEMA, durable=False)
    episodes = OnlineEpisodes(TaskConfig(max_episode_steps=4), BOX, writer, None, seed=0)
    goal = {"hole_position": np.array([0.5, 0.0, 0.02]), "hole_yaw": np.array(0.0)}
    above = np.array([0.5, 0.0, 0.15])
    episodes.start_episode(goal)
    takeover = np.array([0.0, 0.0, -1.0, 0.0])
    first = episodes.step(rows(0.0), above, DOWN)
    second = episodes.step(rows(1.0), above, DOWN, operator_action=takeover)
    assert np.array_equal(second.action, takeover) and second.target[0][2] == pytest.approx(above[2] - 0.02)
    episodes.step(rows(2.0), above, DOWN, operator_action=takeover)
    episodes.step(rows(3.0), above, DOWN)
    end = episodes.step(rows(4.0), above, DOWN)
    assert end.result.interventions == 2 and end.result.steps == 4 and end.result.ended_by == "timeout"
    writer.close()
    logged = TransitionReader(tmp_path).arrays
    assert logged["intervention"].tolist() == [False, True, True, False, False]
    assert not np.array_equal(first.action, takeover)


@pytest.mark.parametrize(("mark", "terminal"), [("success", True), ("failure", False)])
def test_the_operators_mark_ends_the_episode_with_that_outcome(tmp_path, mark, terminal):
    writer = TransitionWriter(tmp_path, SCHEMA, durable=False)
    episodes = OnlineEpisodes(TaskConfig(max_episode_steps=50, reward="sparse"), BOX, writer, None, seed=0)
    episodes.start_episode({"hole_position": np.array([0.5, 0.0, 0.02]), "hole_yaw": np.array(0.0)})
    above = np.array([0.5, 0.0, 0.02 + HOLE_DEPTH + 0.05])  # nowhere near inserted: only the mark ends it
    episodes.step(rows(0.0), above, DOWN)
    end = episodes.step(rows(1.0), above, DOWN, mark=mark)
    assert end.result.ended_by == mark and end.result.success == terminal and end.target is None
    writer.close()
    logged = TransitionReader(tmp_path).arrays
    assert logged["terminal"].tolist() == [terminal, terminal] and logged["reward"][0] == float(terminal)


def test_a_recordings_episode_results_leave_out_aborted_episodes_and_mark_the_operators_successes(tmp_path):
    from msdp.vocabulary import EPISODE
    from msdp_franka_driver.sim.collect import bag_message
    from msdp_perception.bags import BagWriter
    from msdp_policy.episodes import episode_start_json
    from msdp_policy.offline import operator_labels

    results = [  # (start s, end s, how it ended)
        (1.0, 2.0, EpisodeResult(1, True, "success", 10, 1.0, source="keyboard", time=2.0)),
        (3.0, 4.0, EpisodeResult(2, False, "abort", 10, 0.0, source="keyboard", time=4.0)),
        (5.0, 6.0, EpisodeResult(3, False, "timeout", 10, 0.0, source="keyboard", time=6.0)),
    ]
    with BagWriter(tmp_path / "bag") as writer:
        writer.add_topic(EPISODE.name, EPISODE.msgtype)
        for start, end, result in results:
            for at, text in ((start, episode_start_json(result.episode, "keyboard", start)), (end, result.to_json())):
                writer.write(EPISODE.name, round(at * 1e9), bag_message(EPISODE.msgtype, data=text))
    stamps = np.round(np.arange(0.5, 6.5, 0.1) * 1e9).astype(np.int64)  # samples at 10 Hz
    ends = (stamps % 1_000_000_000) == 0  # the image at an episode's end is its terminal observation: no action
    linked = np.where(ends, -1, np.arange(len(stamps)) + 1)
    aborted, marked = operator_labels(tmp_path / "bag", stamps, linked)
    times = stamps / 1e9
    assert np.allclose(times[aborted], np.arange(3.0, 4.05, 0.1))
    assert np.allclose(times[marked], [1.9]), "the last linked step of the episode the operator marked successful"


@pytest.mark.parametrize(
    ("position", "frame", "reason"),
    [((0.5, 0.0, 0.02), "world", "in frame 'world'"), ((0.5, float("nan"), 0.02), "fr3_link0", "expected finite"),
     ((0.5, 0.0, float("inf")), "", "expected finite")],
)  # fmt: skip
def test_a_goal_message_not_finite_or_in_another_frame_is_refused(position, frame, reason):
    from types import SimpleNamespace

    from msdp.vocabulary import pose_msg
    from msdp_franka_driver.pose import yaw_quat
    from msdp_policy.episodes import goal_pose_from_msg

    def make(_msgtype, **fields):
        return SimpleNamespace(**fields)

    good = pose_msg(make, 0, (0.5, 0.0, 0.02), yaw_quat(0.3))  # goals travel as a yaw about z (the driver, teleop)
    position_ok, yaw = goal_pose_from_msg(good)
    assert np.allclose(position_ok, [0.5, 0.0, 0.02]) and yaw == pytest.approx(0.3)
    with pytest.raises(ValueError, match=reason):
        goal_pose_from_msg(pose_msg(make, 0, position, DOWN, frame))
