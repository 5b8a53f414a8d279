"""Operators: a keyboard read from a real terminal (a pseudo-terminal), the SpaceMouse mapping (the device
itself cannot run here: its state is given as pyspacemouse reports it), the scripted expert that takes over
when the policy is stuck, random play, and actions recovered from a hand-guided motion."""

import os
import pty
import termios
from types import SimpleNamespace

import numpy as np
import pytest

from msdp.config import ConfigError
from msdp.vocabulary import pose_msg
from msdp_franka_driver.pose import quat_multiply, yaw_quat
from msdp_policy.operators import (
    KeyboardOperator,
    OperatorConfig,
    RandomOperator,
    ScriptedOperator,
    make_operator,
    spacemouse_action,
)
from msdp_policy.tasks import DOWN, HOLE_DEPTH, PegInsertion, PushCube, TaskConfig, action_spec
from msdp_policy.teleop_node import motion_action

GOAL = {"hole_position": np.array([0.5, 0.0, 0.02]), "hole_yaw": np.array(0.0)}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def terminal():
    """A pseudo-terminal: the operator reads the follower end, the test types on the leader end."""
    leader, follower = pty.openpty()
    yield leader, follower
    os.close(leader)
    os.close(follower)


def test_keys_move_the_arm_while_held_and_events_arrive_once(terminal):
    leader, follower = terminal
    clock = Clock()
    before = termios.tcgetattr(follower)
    keyboard = KeyboardOperator(OperatorConfig(speed=0.5, key_hold=0.3), 4, clock, fd=follower)
    assert keyboard.poll(None, None, None).action is None  # hands off
    os.write(leader, b"w ")
    command = keyboard.poll(None, None, None)
    assert np.allclose(command.action, [0.5, 0, 0, 0]) and command.events == ["start"]
    clock.now = 0.2
    os.write(leader, b"fq\ry")
    command = keyboard.poll(None, None, None)
    assert np.allclose(command.action, [0.5, 0, -0.5, 0.5]) and command.events == ["success", "success"]
    clock.now = 0.45  # w was pressed 0.45 s ago: released; f and q still held
    assert np.allclose(keyboard.poll(None, None, None).action, [0, 0, -0.5, 0.5])
    clock.now = 1.0
    assert keyboard.poll(None, None, None).action is None
    os.write(leader, b"ntxg")
    assert keyboard.poll(None, None, None).events == ["failure", "takeover", "abort", "release"]
    keyboard.close()
    assert termios.tcgetattr(follower) == before, "the terminal must be restored"


def test_a_keyboard_without_a_terminal_is_refused_in_one_line(tmp_path):
    with open(tmp_path / "not-a-tty", "w") as f, pytest.raises(ConfigError, match="needs a terminal"):
        KeyboardOperator(OperatorConfig(), 4, Clock(), fd=f.fileno())


def test_a_spacemouse_deflection_becomes_an_action_outside_the_deadband():
    config = OperatorConfig(deadband=0.1, axes=(1.0, -1.0, 1.0, 1.0))
    state = SimpleNamespace(x=0.5, y=0.3, z=-0.05, yaw=1.4)
    assert np.allclose(spacemouse_action(state, config, 4), [0.5, -0.3, 0.0, 1.0])
    assert np.allclose(spacemouse_action(state, config, 3), [0.5, -0.3, 0.0])
    assert spacemouse_action(SimpleNamespace(x=0.05, y=-0.08, z=0.0, yaw=0.02), config, 4) is None


def test_the_scripted_expert_drives_toward_the_goal_and_says_when_it_has_none():
    task = PegInsertion()
    expert = ScriptedOperator(OperatorConfig(), task, np.random.default_rng(0), Clock())
    above_beside = np.array([0.53, -0.02, 0.02 + HOLE_DEPTH + 0.05])
    action = expert.poll(above_beside, DOWN, GOAL).action
    assert action[0] < 0 and action[1] > 0, "it moves toward the hole"
    assert expert.poll(above_beside, DOWN, None).action is None
    with pytest.raises(ConfigError, match="no scripted expert"):
        ScriptedOperator(OperatorConfig(), PushCube(), np.random.default_rng(0), Clock())


def test_an_intervening_expert_takes_over_when_the_tool_is_stuck_and_hands_back_later():
    clock = Clock()
    config = OperatorConfig(stuck_time=1.0, takeover_time=2.0)
    expert = ScriptedOperator(config, PegInsertion(), np.random.default_rng(0), clock, intervening=True)
    moving = np.array([0.45, 0.0, 0.12])
    for k in range(20):  # a tool that moves 5 mm per step: no takeover
        clock.now = k * 0.1
        assert expert.poll(moving + [0.005 * k, 0, 0], DOWN, GOAL).action is None
    stuck = np.array([0.52, 0.01, 0.02 + HOLE_DEPTH + 0.001])  # on the fixture's top, off the hole
    engaged = []
    for k in range(20, 60):
        clock.now = k * 0.1
        engaged.append(expert.poll(stuck, DOWN, GOAL).action is not None)
    first = engaged.index(True)
    assert 8 <= first <= 11, "takes over after about stuck_time of no progress"
    assert all(engaged[first : first + 19]) and not engaged[first + 21], "for takeover_time, then hands back"
    inserted = np.array([0.5, 0.0, 0.02 + 0.01])
    clock.now = 100.0
    for _ in range(30):
        clock.now += 0.1
        assert expert.poll(inserted, DOWN, GOAL).action is None, "a success needs no help"


def test_random_play_fills_the_action_range_and_the_factory_names_unknown_operators():
    play = RandomOperator(OperatorConfig(random_scale=0.5), 4, np.random.default_rng(0))
    actions = np.array([play.poll(None, None, None).action for _ in range(500)])
    assert np.abs(actions).max() <= 0.5 and actions.min(0).max() < -0.45 and actions.max(0).min() > 0.45
    with pytest.raises(ConfigError, match="unknown operator 'joystick'"):
        make_operator("joystick", OperatorConfig(), PegInsertion(), np.random.default_rng(0), Clock())


def test_a_hand_guided_motion_becomes_the_action_that_would_have_asked_for_it():
    spec = action_spec(TaskConfig())
    start = pose_msg(lambda _t, **f: SimpleNamespace(**f), 0, [0.5, 0.0, 0.2], DOWN)
    turned = quat_multiply(yaw_quat(0.05), DOWN)  # tool down, turned 0.05 rad
    end = pose_msg(lambda _t, **f: SimpleNamespace(**f), 10**8, [0.51, -0.004, 0.19], turned)
    assert np.allclose(motion_action(spec, start, end), [0.5, -0.2, -0.5, 0.5])
    far = pose_msg(lambda _t, **f: SimpleNamespace(**f), 10**8, [0.6, 0.0, 0.2], DOWN)
    assert motion_action(spec, start, far)[0] == 1.0, "a faster hand than the action range is clipped"


def test_an_intervening_expert_helps_once_per_episode_after_help_after_seconds():
    clock = Clock()
    config = OperatorConfig(help_after=1.0, takeover_time=0.5)
    expert = ScriptedOperator(config, PegInsertion(), np.random.default_rng(0), clock, intervening=True)
    tip = np.array([0.45, 0.0, 0.12])
    for episode_start in (0.0, 10.0):
        clock.now = episode_start
        expert.episode_started(clock.now)
        engaged = []
        for k in range(40):
            clock.now = episode_start + k * 0.1
            engaged.append(expert.poll(tip + [0.01 * k, 0, 0], DOWN, GOAL).action is not None)
        assert np.flatnonzero(engaged).tolist() == [10, 11, 12, 13, 14]
    clock.now = 20.0
    expert.episode_started(clock.now)
    late = []  # an operator stalled through the help time helps from its next poll, for the whole takeover
    for now in (20.5, 21.75, 22.0, 22.2, 22.3, 30.0):
        clock.now = now
        late.append(expert.poll(tip, DOWN, GOAL).action is not None)
    assert late == [False, True, True, True, False, False]
