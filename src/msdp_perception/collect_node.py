"""Collector node: random-action play on the arm through the robot's own topics, for pretraining data.

It sees only what a policy on the real robot sees (no privileged simulator state), so the same job runs on the
simulated and the real Franka. At ``task.control_rate`` it takes the latest /franka/ee_pose, draws an action
uniform in ``[-action_scale, action_scale]^action_dim``, turns it into an impedance target with
``target_after`` and publishes
  /franka/equilibrium_pose  geometry_msgs/PoseStamped, frame fr3_link0, reliable: the target
  /msdp/action              geometry_msgs/TwistStamped, reliable: linear = commanded displacement (m),
                            angular.z = commanded yaw change (rad), header.stamp = stamp of the ee_pose acted on
Every episode, the first included, starts with a call to /franka_driver/reset (std_srvs/Trigger); the first
action waits for the first camera image after it and for the arm to rest (poses no older than that image,
still for one control period), so no recorded image-to-image interval spanning a reset holds an action and
the real arm is back at its start pose. After ``task.max_episode_steps`` actions it waits
for an image stamped one control period after the last action (the terminal observation) before the next
reset. After ``episodes`` episodes it exits 0; a failed reset or a silent driver or camera exits 1.

Run it with ``use_sim_time`` next to the simulated driver: it then steps at the simulation's pace, faster than
real time when the driver's ``real_time_factor`` is above 1.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from msdp import vocabulary as vocab
from msdp.config import param_range
from msdp.node import MsdpNode, ros_message, run_node
from msdp.vocabulary import stamp_nanoseconds
from msdp_policy.tasks import TaskConfig, action_spec, target_after

RESET_SERVICE = vocab.driver_service(f"/{vocab.DRIVER_NODE}", vocab.RESET_SERVICE)
POSE_TOPIC, IMAGE_TOPIC = vocab.EE_POSE.name, vocab.IMAGE.name
REST_TOLERANCE = 0.001  # m per control period: the arm is at rest when it moves less


@dataclass(frozen=True)
class CollectorConfig:
    """Collector node parameters; ``task.*`` has the driver's names, so one parameter file serves both."""

    episodes: int = field(default=10, metadata=param_range(1, 1_000_000, "episodes to collect"))
    seed: int = field(default=0, metadata=param_range(0, 2**31 - 1, "random action seed"))
    action_scale: float = field(default=1.0, metadata=param_range(0.0, 1.0, "x full action range"))
    wait_for_recorder: bool = field(default=True, metadata={"doc": "act only once /msdp/action has a subscriber"})
    driver_timeout: float = field(default=30.0, metadata=param_range(1.0, 600.0, "s (wall) without pose or image"))
    task: TaskConfig = field(default_factory=TaskConfig)


class CollectorNode(MsdpNode):
    def __init__(self):
        super().__init__("collector", CollectorConfig)
        task = self.config.task
        self.action_spec = action_spec(task)
        self.rng = np.random.default_rng(self.config.seed)
        self.control_period_ns = int(1e9 / task.control_rate)
        self.pose: PoseStamped | None = None
        self.image_ns = -1  # stamp of the newest camera image
        self.scene_start_ns: int | None = None  # stamp of the first image after the last reset
        self.rest_position: np.ndarray | None = None  # tool position at the last tick, until the episode starts
        self.acted_on_ns = 0  # stamp of the pose the last action acted on
        self.episode = 0  # episodes started
        self.steps = 0  # actions in the current episode
        self.phase = "starting"  # starting -> resetting -> acting -> settling -> resetting ... -> done
        self.exit_code: int | None = None
        self.heard = dict.fromkeys((POSE_TOPIC, IMAGE_TOPIC), time.monotonic())  # wall time of the last message

        self.subscription(vocab.EE_POSE, self.on_pose)
        self.subscription(vocab.IMAGE, self.on_image)
        self.target_pub = self.publisher(vocab.EQUILIBRIUM_POSE)
        self.action_pub = self.publisher(vocab.ACTION)
        self.reset_client = self.create_client(Trigger, RESET_SERVICE)
        self.create_timer(1.0 / task.control_rate, self.on_tick)
        # Wall-clock watchdog: with use_sim_time a dead driver also stops the clock, so the tick never comes.
        self.create_timer(1.0, self.check_sensors, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"collecting {self.config.episodes} episodes of {task.max_episode_steps} random actions "
            f"({task.name}, scale {self.config.action_scale}, {task.control_rate} Hz)"
        )

    def on_pose(self, msg: PoseStamped) -> None:
        self.pose = msg
        self.heard[POSE_TOPIC] = time.monotonic()

    def on_image(self, msg: Image) -> None:
        self.image_ns = stamp_nanoseconds(msg.header)
        self.heard[IMAGE_TOPIC] = time.monotonic()
        if self.phase == "acting" and self.scene_start_ns is None:
            self.scene_start_ns = self.image_ns

    def on_tick(self) -> None:
        if self.phase == "starting" and self.ready():
            self.reset()
        elif self.phase == "acting" and (self.steps > 0 or self.episode_can_start()):
            self.act()
        elif self.phase == "settling" and self.image_ns >= self.acted_on_ns + self.control_period_ns:
            # The terminal observation (an image after the last action has run) is on the wire.
            if self.episode >= self.config.episodes:
                self.finish(0, f"collected {self.episode} episodes")
            else:
                self.reset()

    def ready(self) -> bool:
        if self.pose is None or not self.reset_client.service_is_ready():
            return False
        if self.config.wait_for_recorder and self.action_pub.get_subscription_count() == 0:
            self.get_logger().info("waiting for a subscriber on /msdp/action (the recorder)", throttle_duration_sec=5.0)
            return False
        return True

    def episode_can_start(self) -> bool:
        """The arm rests in the new scene: an image after the reset, then two poses no older than it, still.

        The image makes the episode's first observation one of the new scene (so no recorded image-to-image
        interval spanning the reset holds an action); resting waits out the real arm's return to its start pose.
        """
        if self.scene_start_ns is None or self.pose is None:
            return False
        if stamp_nanoseconds(self.pose.header) < self.scene_start_ns:
            return False
        position, _ = vocab.pose_arrays(self.pose)
        previous, self.rest_position = self.rest_position, position
        return previous is not None and np.linalg.norm(position - previous) < REST_TOLERANCE

    def act(self) -> None:
        task = self.config.task
        action = self.rng.uniform(-1.0, 1.0, self.action_spec.dim) * self.config.action_scale
        target = target_after(*vocab.pose_arrays(self.pose), action, self.action_spec)
        self.acted_on_ns = stamp_nanoseconds(self.pose.header)
        self.target_pub.publish(vocab.pose_msg(ros_message, self.now_ns(), *target))
        self.action_pub.publish(vocab.twist_msg(ros_message, self.acted_on_ns, *self.action_spec.displacement(action)))
        self.steps += 1
        if self.steps >= task.max_episode_steps:
            self.phase = "settling"

    def reset(self) -> None:
        self.phase = "resetting"
        self.reset_client.call_async(Trigger.Request()).add_done_callback(self.on_reset_done)

    def on_reset_done(self, future) -> None:
        response = future.result()
        if response is None or not response.success:
            message = response.message if response is not None else "no response"
            self.finish(1, f"{RESET_SERVICE} failed: {message}")
            return
        self.episode += 1
        self.steps = 0
        self.scene_start_ns = None  # the next image is the first of the new scene
        self.rest_position = None
        self.phase = "acting"
        self.get_logger().info(f"episode {self.episode}/{self.config.episodes}: {response.message}")

    def check_sensors(self) -> None:
        now = time.monotonic()
        silent = [topic for topic, heard in self.heard.items() if now - heard > self.config.driver_timeout]
        if self.phase != "done" and silent:
            self.finish(
                1, f"no message on {', '.join(silent)} for {self.config.driver_timeout:.0f} s: is the driver running?"
            )

    def finish(self, code: int, message: str) -> None:
        self.phase = "done"
        self.exit_code = code
        if code == 0:
            self.get_logger().info(message)
        else:
            self.get_logger().error(message)


def collection_params(
    out: Path, episodes: int, task: str, real_time_factor: float, max_episode_steps: int, seed: int
) -> dict[str, dict[str, object]]:
    """Parameters of the driver (simulated), recorder and collector for one collection run (module -> params)."""
    shared = {"task.name": task, "task.max_episode_steps": max_episode_steps}
    return {
        "msdp_franka_driver.driver_node": {
            **shared,
            "backend": "mujoco",
            "real_time_factor": real_time_factor,
            "seed": seed,
        },
        "msdp_perception.recorder_node": {"output": str(out), "use_sim_time": True},
        "msdp_perception.collect_node": {**shared, "episodes": episodes, "seed": seed, "use_sim_time": True},
    }


def run_collection(
    out: Path,
    episodes: int,
    task: str = "peg",
    real_time_factor: float = 1.0,
    max_episode_steps: int = 100,
    seed: int = 0,
) -> int:
    """Run driver, recorder and collector as subprocesses (what collect.launch.py does) until the collector ends.

    Then the recorder is stopped with SIGINT (it closes the bag) and the driver after it. Node output goes to
    this process's stdout/stderr. Returns the collector's exit code, or 1 if another node died first.
    """
    params = collection_params(out, episodes, task, real_time_factor, max_episode_steps, seed)
    processes: dict[str, subprocess.Popen] = {}
    try:
        for module, values in params.items():
            args = [sys.executable, "-m", module, "--ros-args"]
            for key, value in values.items():
                args += ["-p", f"{key}:={value}"]
            processes[module] = subprocess.Popen(args)  # our process group: Ctrl-C reaches every node, as in launch
        collector = processes["msdp_perception.collect_node"]
        while collector.poll() is None:
            for module, process in processes.items():
                if process.poll() is not None and process is not collector:
                    print(f"collect-ros: {module} exited ({process.returncode}) during collection", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return collector.returncode
    except KeyboardInterrupt:
        print("collect-ros: interrupted", file=sys.stderr)
        return 130
    finally:
        for process in reversed(processes.values()):  # collector, recorder (closes the bag), driver
            stop_process(process)


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGINT (what Ctrl-C sends), then SIGKILL if it has not exited within ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    return run_node("collector", CollectorNode, argv)


if __name__ == "__main__":
    sys.exit(main())
