"""Operators, without ROS: who moves the arm when the policy does not -- a person at a keyboard or a SpaceMouse,
the simulated task's scripted expert (for rehearsals and tests), or random play.

Every operator answers ``poll`` at the control rate with an ``OperatorCommand``: an action in the policy's own
units (``[-1, 1]`` per axis, as the actor emits; ``msdp_policy.tasks.target_after`` turns it into a target, so
operator and policy go through the same safety path) or ``None`` while hands are off, and the events pressed
since the last poll (start an episode, mark success or failure, abort, take over from the policy or hand back).
"""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from msdp.config import ConfigError, param_range
from msdp_policy.tasks import Task

GoalState = dict[str, np.ndarray]  # the task's goal state (``Task.state_from_goal``)
EVENTS = ("start", "success", "failure", "abort", "takeover", "release")
OPERATORS = ("keyboard", "spacemouse", "scripted", "random")


@dataclass
class OperatorCommand:
    action: np.ndarray | None  # in [-1, 1]^dim while the operator drives, else None
    events: list[str] = field(default_factory=list)


class Operator(Protocol):
    name: str

    def poll(
        self, tip: np.ndarray, orientation: np.ndarray, goal_state: dict[str, np.ndarray] | None
    ) -> OperatorCommand:
        """The operator's command now, given the tool pose and the episode's goal (None when none is known)."""

    def close(self) -> None:
        """Release the device (restore the terminal)."""


@dataclass(frozen=True)
class OperatorConfig:
    """Device and scripted-operator settings (the teleop node's ``operator.*`` parameters)."""

    speed: float = field(default=0.5, metadata=param_range(0.05, 1.0, "x full action while a key is held"))
    key_hold: float = field(default=0.6, metadata=param_range(0.05, 2.0, "s a key press keeps moving the arm"))
    deadband: float = field(default=0.1, metadata=param_range(0.0, 0.9, "SpaceMouse deflection ignored"))
    axes: tuple[float, float, float, float] = field(
        default=(1.0, 1.0, 1.0, 1.0), metadata=param_range(-1.0, 1.0, "SpaceMouse sign per action axis x y z yaw")
    )
    noise: float = field(default=0.0, metadata=param_range(0.0, 1.0, "scripted: Gaussian action noise std"))
    stuck_time: float = field(
        default=0.0,
        metadata=param_range(0.0, 30.0, "scripted, intervening: s stuck before taking over; 0 = never"),
    )
    help_after: float = field(
        default=0.0,
        metadata=param_range(0.0, 600.0, "scripted, intervening: s into an episode, then help; 0 = never"),
    )
    takeover_time: float = field(default=2.0, metadata=param_range(0.1, 30.0, "scripted: s of each takeover"))
    random_scale: float = field(default=1.0, metadata=param_range(0.0, 1.0, "random play: x full action"))


# -- keyboard ---------------------------------------------------------------------------------------------------
MOVE_KEYS = {  # key -> (action axis, sign); base frame: x away from the robot, y to its left, z up
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0),
    "r": (2, 1.0), "f": (2, -1.0), "q": (3, 1.0), "e": (3, -1.0),
}  # fmt: skip
EVENT_KEYS = {" ": "start", "\r": "success", "\n": "success", "y": "success", "n": "failure", "x": "abort",
              "t": "takeover", "g": "release"}  # fmt: skip
KEY_HELP = (
    "keys: w/s x+-, a/d y+-, r/f z+-, q/e yaw+- (hold to move); space start, enter/y success, n failure, "
    "x abort, t take over, g give back"
)


class KeyboardOperator:
    """Keys read from the terminal the node runs in (raw mode, restored on ``close``). Terminals report a held
    key as repeated presses, so each press keeps its axis moving for ``key_hold`` seconds."""

    name = "keyboard"

    def __init__(self, config: OperatorConfig, action_dim: int, clock, fd: int | None = None):
        self.fd = sys.stdin.fileno() if fd is None else fd
        if not os.isatty(self.fd):
            raise ConfigError("operator 'keyboard' needs a terminal: run the teleop node in one (not under launch)")
        self.config, self.action_dim, self.clock = config, action_dim, clock
        self.saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        self.held: dict[tuple[int, float], float] = {}  # (axis, sign) -> time of the last press

    def poll(self, tip, orientation, goal_state) -> OperatorCommand:
        now = self.clock()
        events = []
        for key in self._read():
            if key.lower() in MOVE_KEYS:
                self.held[MOVE_KEYS[key.lower()]] = now
            elif key in EVENT_KEYS:
                events.append(EVENT_KEYS[key])
        self.held = {k: t for k, t in self.held.items() if now - t <= self.config.key_hold}
        if not self.held:
            return OperatorCommand(None, events)
        action = np.zeros(self.action_dim)
        for axis, sign in self.held:
            if axis < self.action_dim:
                action[axis] += sign * self.config.speed
        return OperatorCommand(np.clip(action, -1.0, 1.0), events)

    def _read(self) -> str:
        keys = []
        while select.select([self.fd], [], [], 0.0)[0]:
            chunk = os.read(self.fd, 64)
            if not chunk:
                break
            keys.append(chunk.decode(errors="ignore"))
        return "".join(keys)

    def close(self) -> None:
        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


# -- SpaceMouse -------------------------------------------------------------------------------------------------
def spacemouse_action(state, config: OperatorConfig, action_dim: int) -> np.ndarray | None:
    """A SpaceMouse state (x, y, z, yaw in [-1, 1], ROS axis convention) as an action, or None inside the
    deadband (hands off)."""
    raw = np.array([state.x, state.y, state.z, state.yaw][:action_dim], dtype=float)
    raw[np.abs(raw) < config.deadband] = 0.0
    if not raw.any():
        return None
    return np.clip(raw * np.array(config.axes[:action_dim]), -1.0, 1.0)


class SpaceMouseOperator:
    """A 3Dconnexion SpaceMouse through ``pyspacemouse``: deflect to move; the left button starts an episode or
    takes over from the policy, the right one marks success (failure and abort stay on the keyboard)."""

    name = "spacemouse"
    BUTTON_EVENTS = ("start", "success")

    def __init__(self, config: OperatorConfig, action_dim: int):
        try:
            import pyspacemouse
        except ImportError as exc:  # the package, or the hidapi library under it
            raise ConfigError(f"operator 'spacemouse': cannot load pyspacemouse ({exc})") from exc
        try:
            self.device = pyspacemouse.open(axis_convention=pyspacemouse.AxisConvention.ROS)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ConfigError(
                f"operator 'spacemouse': no SpaceMouse found ({exc}); plugged in, udev rules set?"
            ) from exc
        self.config, self.action_dim = config, action_dim
        self.pressed: list[int] = []

    def poll(self, tip, orientation, goal_state) -> OperatorCommand:
        state = self.device.read()
        buttons = list(state.buttons)
        events = [self.BUTTON_EVENTS[i] for i, down in enumerate(buttons[:2])
                  if down and not (i < len(self.pressed) and self.pressed[i])]  # fmt: skip
        if "start" in events:
            events.append("takeover")
        self.pressed = buttons
        return OperatorCommand(spacemouse_action(state, self.config, self.action_dim), events)

    def close(self) -> None:
        self.device.close()


# -- the simulated task's expert, and random play ---------------------------------------------------------------
class ScriptedOperator:
    """The task's scripted expert, acting from the tool pose and the goal: a stand-in for a person in rehearsals
    and tests. Driving demonstrations it always acts; intervening, it takes over like a person watching the
    policy would, for ``takeover_time`` seconds: when the tool has not moved more than 2 mm for ``stuck_time``
    seconds without succeeding, or when an episode has run ``help_after`` seconds (``episode_started`` tells
    it when one starts)."""

    name = "scripted"

    def __init__(self, config: OperatorConfig, task: Task, rng: np.random.Generator, clock, intervening: bool = False):
        if not hasattr(task, "expert_action"):
            raise ConfigError(f"operator 'scripted': task '{task.name}' has no scripted expert (peg has)")
        self.config, self.task, self.rng, self.clock = config, task, rng, clock
        self.intervening = intervening
        self.history: deque[tuple[float, np.ndarray]] = deque()
        self.engaged_until = -np.inf
        self.episode_start, self.helped = np.inf, False

    def episode_started(self, start: float) -> None:
        self.episode_start, self.engaged_until, self.helped = start, -np.inf, False

    def poll(self, tip, orientation, goal_state) -> OperatorCommand:
        if goal_state is None:
            return OperatorCommand(None)
        now = self.clock()
        if self.intervening and not self._engaged(now, tip, orientation, goal_state):
            return OperatorCommand(None)
        action = self.task.expert_action(tip, orientation, goal_state)
        if self.config.noise > 0:
            action = action + self.rng.normal(0.0, self.config.noise, action.shape)
        return OperatorCommand(np.clip(action, -1.0, 1.0))

    def _engaged(self, now: float, tip: np.ndarray, orientation: np.ndarray, goal_state) -> bool:
        if now < self.engaged_until:
            return True
        if self.config.help_after > 0 and not self.helped and now >= self.episode_start + self.config.help_after:
            self.engaged_until, self.helped = now + self.config.takeover_time, True  # late (a stalled poll) still helps
            return True
        if self.config.stuck_time <= 0 or self.task.score_state(tip, orientation, goal_state).success:
            self.history.clear()
            return False
        self.history.append((now, tip.copy()))
        while self.history and now - self.history[0][0] > self.config.stuck_time:
            self.history.popleft()
        span = now - self.history[0][0]
        moved = max(float(np.linalg.norm(p - tip)) for _, p in self.history)
        if span >= 0.9 * self.config.stuck_time and moved < 0.002:
            self.engaged_until = now + self.config.takeover_time
            self.history.clear()
            return True
        return False

    def close(self) -> None:
        pass


class RandomOperator:
    """Play: uniform random actions (what pretraining's play data is)."""

    name = "random"

    def __init__(self, config: OperatorConfig, action_dim: int, rng: np.random.Generator):
        self.scale, self.action_dim, self.rng = config.random_scale, action_dim, rng

    def poll(self, tip, orientation, goal_state) -> OperatorCommand:
        return OperatorCommand(self.rng.uniform(-1.0, 1.0, self.action_dim) * self.scale)

    def close(self) -> None:
        pass


def make_operator(name: str, config: OperatorConfig, task: Task, rng: np.random.Generator, clock,
                  intervening: bool = False) -> Operator:  # fmt: skip
    """The operator called ``name`` (one of OPERATORS); ConfigError with the reason if its device is missing."""
    if name == "keyboard":
        return KeyboardOperator(config, task.action_dim, clock)
    if name == "spacemouse":
        return SpaceMouseOperator(config, task.action_dim)
    if name == "scripted":
        return ScriptedOperator(config, task, rng, clock, intervening)
    if name == "random":
        return RandomOperator(config, task.action_dim, rng)
    raise ConfigError(f"unknown operator {name!r}; choose one of {', '.join(OPERATORS)}")
