"""Franka driver node: a thin rclpy adapter around a backend (real libfranka arm or simulated MuJoCo arm).

Topics (``msdp.vocabulary``; base frame ``fr3_link0``, SI units):
  publishes  /joint_states, /franka/ee_pose, /franka/status (latched: "running", or the fault that stopped the
             arm), /msdp/markers (workspace box, target, wrench arrow), /diagnostics (1 Hz: control loop health);
             a simulated cell (``backend: mujoco``) also /camera/image_raw, /ft_sensor/wrench, /clock and
             /msdp/task_goal (latched: the episode's goal, e.g. the peg hole, yaw about z)
  subscribes /franka/equilibrium_pose (geometry_msgs/PoseStamped): the impedance target (ignored while hand guiding)
  services   ~/reset, ~/recover (std_srvs/Trigger); ~/hand_guide (std_srvs/SetBool): true = the gains ramp down to
             ``hand_guiding.*`` and the equilibrium follows the arm, so a person can move it; false = hold where it
             was left, the gains ramp back up
Run-time parameters: the ``impedance.*`` gains (``control_law.GAIN_NAMES``; validated like at start-up, ramped
over ``impedance.gain_ramp_time``) and, on a simulated arm, ``sim.hand_force`` (a simulated hand on the tool);
every other parameter is refused once the node runs.
A simulated cell stamps with simulated time and publishes /clock: run the other nodes with ``use_sim_time``
when the simulation runs faster or slower than real time. The libfranka backend is imported only when chosen,
the simulator only for ``backend: mujoco``: a real arm's driver never loads MuJoCo.
"""

from __future__ import annotations

import array
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from geometry_msgs.msg import Point, PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from visualization_msgs.msg import Marker, MarkerArray

from msdp import vocabulary as vocab
from msdp.config import ConfigError, from_dict, param_range
from msdp.markers import sphere_marker, workspace_box_marker
from msdp.node import BUILTIN_PARAMETERS, MsdpNode, ros_message, run_node
from msdp_franka_driver.backend import ArmBackend, ArmSnapshot, SimulatedCell
from msdp_franka_driver.control_law import GAIN_NAMES, HandGuidingConfig, ImpedanceConfig, SafetyConfig
from msdp_franka_driver.libfranka_backend import LibfrankaConfig
from msdp_franka_driver.pose import quat_to_matrix, yaw_quat
from msdp_franka_driver.sim.config import SimConfig, VirtualCellConfig
from msdp_policy.tasks import TaskConfig


@dataclass(frozen=True)
class DriverConfig:
    """Driver node parameters; ``config/driver.yaml`` holds the same names."""

    backend: str = field(default="mujoco", metadata={"choices": ("mujoco", "libfranka")})
    state_rate: float = field(default=100.0, metadata=param_range(1.0, 1000.0, "Hz (simulated time), states, wrench"))
    camera_rate: float = field(default=10.0, metadata=param_range(0.0, 60.0, "Hz (simulated time), camera; 0 = off"))
    marker_rate: float = field(default=5.0, metadata=param_range(0.0, 60.0, "Hz, rviz markers; 0 = off"))
    real_time_factor: float = field(default=1.0, metadata=param_range(0.01, 100.0, "simulated s per wall s"))
    seed: int = field(default=0, metadata=param_range(0, 2**31 - 1, "first scene seed (mujoco)"))
    impedance: ImpedanceConfig = field(default_factory=ImpedanceConfig)
    hand_guiding: HandGuidingConfig = field(default_factory=HandGuidingConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    libfranka: LibfrankaConfig = field(default_factory=LibfrankaConfig)
    sim_sensors: str = field(
        default="topics",
        metadata={
            "choices": ("topics", "virtual_cell"),
            "doc": "mujoco: publish camera and wrench topics itself, or serve them as an MJPEG stream and a Net F/T "
            "box (virtual_cell.*) for camera_node and ft_node",
        },
    )
    virtual_cell: VirtualCellConfig = field(default_factory=VirtualCellConfig)


def make_backend(config: DriverConfig) -> ArmBackend:
    """The configured backend; each is imported only when chosen."""
    if config.backend == "mujoco":
        from msdp_franka_driver.sim.backend import MujocoArm
        from msdp_franka_driver.sim.config import EnvConfig

        env = EnvConfig(task=config.task, sim=config.sim, impedance=config.impedance, safety=config.safety)
        virtual_cell = config.virtual_cell if config.sim_sensors == "virtual_cell" else None
        camera_period = 1.0 / config.camera_rate if config.camera_rate > 0 else float("inf")
        return MujocoArm(
            env,
            config.seed,
            1.0 / config.state_rate,
            config.real_time_factor,
            virtual_cell,
            camera_period,
            config.hand_guiding,
        )
    from msdp_franka_driver.libfranka_backend import LibfrankaArm

    return LibfrankaArm(config.libfranka, config.impedance, config.safety, config.hand_guiding)


RUNTIME_GAINS = tuple(f"impedance.{name}" for name in GAIN_NAMES)
HAND_FORCE = "sim.hand_force"


class FrankaDriverNode(MsdpNode):
    def __init__(self):
        super().__init__(vocab.DRIVER_NODE, DriverConfig)
        self.backend = make_backend(self.config)
        try:
            self.backend.start()
        except (RuntimeError, TimeoutError):
            super().destroy_node()
            raise
        self.cell = self.backend if isinstance(self.backend, SimulatedCell) else None
        self.sensor_topics = self.cell is not None and self.config.sim_sensors == "topics"
        self.target: PoseStamped | None = None
        self.status = ""
        self.impedance = self.config.impedance  # with the gains set at run time

        self.joint_pub = self.publisher(vocab.JOINT_STATES)
        self.pose_pub = self.publisher(vocab.EE_POSE)
        self.status_pub = self.publisher(vocab.DRIVER_STATUS)
        self.marker_pub = self.publisher(vocab.MARKERS)
        self.external_wrench_pub = self.publisher(vocab.EXTERNAL_WRENCH)
        self.subscription(vocab.EQUILIBRIUM_POSE, self.on_target)
        self.create_service(Trigger, vocab.RESET_SERVICE, self.on_reset)
        self.create_service(Trigger, vocab.RECOVER_SERVICE, self.on_recover)
        self.create_service(SetBool, vocab.HAND_GUIDE_SERVICE, self.on_hand_guide)
        self.add_on_set_parameters_callback(self.on_set_parameters)
        self.add_post_set_parameters_callback(self.on_parameters_set)
        self.create_timer(1.0, self.on_diagnostics)
        if self.sensor_topics:
            self.wrench_pub = self.publisher(vocab.WRENCH)
            self.image_pub = self.publisher(vocab.IMAGE)
        if self.cell is not None:
            self.clock_pub = self.publisher(vocab.CLOCK)
            self.goal_pub = self.publisher(vocab.TASK_GOAL)
            self.next_camera_time = self.backend.snapshot().time
            self.publish_task_goal()
        self.publish_status()
        self.create_timer(1.0 / self.config.state_rate, self.on_tick)
        if self.config.marker_rate > 0:
            self.create_timer(1.0 / self.config.marker_rate, self.publish_markers)
        self.get_logger().info(f"franka driver up: backend {self.backend.name}")

    # -- time ----------------------------------------------------------------------------------
    def stamp_ns(self, snapshot: ArmSnapshot) -> int:
        """A simulated cell's clock, or this node's clock for a real arm."""
        return round(snapshot.time * 1e9) if self.cell is not None else self.now_ns()

    # -- callbacks -----------------------------------------------------------------------------
    def on_tick(self) -> None:
        """Publish the states the backend produced over one state period (a simulation may make several to
        catch up with the wall clock), camera frames when due, and the status when it changes."""
        for snapshot in self.backend.advance(1.0 / self.config.state_rate):
            self.publish_state(snapshot)
            if self.sensor_topics and self.config.camera_rate > 0 and snapshot.time >= self.next_camera_time - 1e-6:
                self.image_pub.publish(
                    vocab.image_msg(ros_message, self.stamp_ns(snapshot), self.cell.image(), "rgb8", vocab.CAMERA_FRAME)
                )
                self.next_camera_time += 1.0 / self.config.camera_rate
        self.publish_status()

    def publish_state(self, snapshot: ArmSnapshot) -> None:
        stamp = self.stamp_ns(snapshot)
        if self.cell is not None:
            self.clock_pub.publish(
                ros_message("rosgraph_msgs/msg/Clock", clock=vocab.header(ros_message, stamp, "").stamp)
            )
        if self.sensor_topics:
            self.wrench_pub.publish(vocab.wrench_msg(ros_message, stamp, snapshot.wrench))
        self.external_wrench_pub.publish(
            vocab.wrench_msg(ros_message, stamp, snapshot.wrench, frame_id=self.backend.wrench_frame)
        )
        self.joint_pub.publish(vocab.joint_state_msg(ros_message, stamp, snapshot.q, snapshot.dq, snapshot.tau))
        self.pose_pub.publish(vocab.pose_msg(ros_message, stamp, snapshot.position, snapshot.orientation))

    def publish_status(self, force: bool = False) -> None:
        """/franka/status on every change (latched, so a node that starts later learns it too)."""
        fault = self.backend.fault()
        status = f"fault: {fault}" if fault else vocab.DRIVER_RUNNING
        if status != self.status or force:
            self.status = status
            self.status_pub.publish(String(data=status))
            if fault:
                self.get_logger().error(f"arm stopped: {fault} (call ~/recover)")

    def runtime_change(self, parameters: list[Parameter]) -> tuple[ImpedanceConfig, tuple[float, ...] | None]:
        """The impedance config and simulated hand force ``parameters`` ask for; ConfigError naming the first
        parameter that is bad or may not change while the node runs."""
        gains: dict[str, Any] = {}
        hand_force = None
        for parameter in parameters:
            name, value = parameter.name, parameter.value
            value = value.tolist() if isinstance(value, array.array) else value
            if name in RUNTIME_GAINS:
                gains[name.removeprefix("impedance.")] = value
            elif name == HAND_FORCE and self.cell is not None:
                hand_force = from_dict(SimConfig, {"hand_force": value}, prefix="sim.").hand_force
            elif name == HAND_FORCE:
                raise ConfigError(f"parameter '{name}' acts only on the simulated arm (backend: mujoco)")
            elif name not in BUILTIN_PARAMETERS:
                runtime = ", ".join((*RUNTIME_GAINS, HAND_FORCE) if self.cell is not None else RUNTIME_GAINS)
                raise ConfigError(
                    f"parameter '{name}' is fixed while the driver runs (restart it to change it); "
                    f"at run time: {runtime}"
                )
        impedance = from_dict(ImpedanceConfig, {**asdict(self.impedance), **gains}, prefix="impedance.")
        return impedance, hand_force

    def on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Refuse a bad value, or a parameter that is fixed at run time, with the reason (the old value stays)."""
        try:
            self.runtime_change(parameters)
        except ConfigError as exc:
            self.get_logger().warning(f"parameter change refused: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def on_parameters_set(self, parameters: list[Parameter]) -> None:
        """Apply an accepted change: new gains ramp in the control loop; a simulated hand force acts at once."""
        impedance, hand_force = self.runtime_change(parameters)
        if impedance != self.impedance:
            self.impedance = impedance
            self.backend.set_gains(impedance)
            gains = ", ".join(f"{name} {getattr(impedance, name)}" for name in GAIN_NAMES)
            self.get_logger().info(f"impedance gains: {gains} (ramping over {impedance.gain_ramp_time} s)")
        if hand_force is not None:
            self.cell.set_hand_force(np.array(hand_force))

    def on_hand_guide(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """True: low gains, the equilibrium follows the arm (a person moves it; the recorder records it as
        usual); false: hold the pose where it was left and ramp the gains back up."""
        fault = self.backend.fault()
        if request.data and fault:
            response.success = False
            response.message = f"cannot hand guide: the arm is stopped ({fault}); call ~/recover"
            return response
        response.message = self.backend.hand_guide(request.data)
        response.success = self.backend.snapshot().hand_guiding == request.data
        if response.success and request.data:
            self.target = None
        self.get_logger().info(response.message)
        return response

    def on_target(self, msg: PoseStamped) -> None:
        if self.backend.snapshot().hand_guiding:
            self.get_logger().warning(
                "target ignored: hand guiding (call ~/hand_guide false to follow targets again)",
                throttle_duration_sec=1.0,
            )
            return
        if msg.header.frame_id not in ("", vocab.BASE_FRAME):
            self.get_logger().warning(
                f"target rejected: frame '{msg.header.frame_id}', expected '{vocab.BASE_FRAME}'",
                throttle_duration_sec=1.0,
            )
            return
        fault = self.backend.fault()
        if fault:
            self.get_logger().warning(f"target ignored: the arm is stopped ({fault}); call ~/recover",
                                      throttle_duration_sec=1.0)  # fmt: skip
            return
        position, orientation = vocab.pose_arrays(msg)
        if not self.backend.set_target(position, orientation):
            self.get_logger().warning(
                f"target rejected: non-finite or zero-norm pose {position} {orientation}; holding the previous target",
                throttle_duration_sec=1.0,
            )
            return
        self.target = msg

    def on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Simulation: re-randomise the scene. Real arm: move back to the pose it had at start-up."""
        self.target = None
        fault = self.backend.fault()
        if fault:
            response.success, response.message = False, f"cannot reset: the arm is stopped ({fault}); call ~/recover"
            return response
        if self.backend.snapshot().hand_guiding:
            response.success, response.message = False, "cannot reset while hand guiding: call ~/hand_guide false"
            return response
        response.success, response.message = True, self.backend.reset()
        if self.cell is not None:
            self.publish_task_goal()
        return response

    def publish_task_goal(self) -> None:
        """Simulation: the episode's goal pose (e.g. the peg hole), for the policy node's reward and success."""
        goal = self.cell.task_goal()
        if goal is not None:
            stamp = self.stamp_ns(self.backend.snapshot())
            self.goal_pub.publish(vocab.pose_msg(ros_message, stamp, goal[0], yaw_quat(goal[1])))

    def on_recover(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            response.message = self.backend.recover()
            response.success = not self.backend.fault()
        except RuntimeError as exc:
            response.success, response.message = False, f"recovery failed: {exc}"
        self.publish_status()
        return response

    def on_diagnostics(self) -> None:
        """Control-loop health: the backend's figures (the gains in effect among them), the mode, and what to do
        about a fault."""
        fault = self.backend.fault()
        snapshot = self.backend.snapshot()
        values = {"holding": str(snapshot.holding), "hand_guiding": str(snapshot.hand_guiding)}
        values.update(self.backend.diagnostics())
        level, message = "ok", "hand guiding" if snapshot.hand_guiding else "running"
        if fault:
            level, message = "error", f"{fault} (call ~/recover)"
        self.publish_diagnostics("control loop", level, message, values)
        self.publish_status(force=True)

    def publish_markers(self) -> None:
        snapshot = self.backend.snapshot()
        now = vocab.header(ros_message, self.stamp_ns(snapshot), "").stamp
        safety = self.config.safety
        markers = [workspace_box_marker(safety.workspace_min, safety.workspace_max, now, "workspace"),
                   self.wrench_marker(now, snapshot)]  # fmt: skip
        if self.target is not None:
            target = vocab.pose_msg(ros_message, self.stamp_ns(snapshot), *vocab.pose_arrays(self.target))
            markers.append(sphere_marker("target", target, 0.02, (1.0, 0.6, 0.0)))
        self.marker_pub.publish(MarkerArray(markers=markers))

    def wrench_marker(self, now, snapshot: ArmSnapshot) -> Marker:
        """The force on the tool as an arrow from the tool tip, 1 cm per N, in the base frame."""
        arrow = Marker(ns="wrench", id=0, type=Marker.ARROW, action=Marker.ADD)
        arrow.header.stamp, arrow.header.frame_id = now, vocab.BASE_FRAME
        arrow.pose.orientation.w = 1.0
        tip = snapshot.position
        end = tip + 0.01 * wrench_in_base(snapshot)[:3]
        arrow.points = [Point(x=tip[0], y=tip[1], z=tip[2]), Point(x=end[0], y=end[1], z=end[2])]
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.005, 0.01, 0.01
        arrow.color.r, arrow.color.a = 1.0, 0.9
        return arrow

    def destroy_node(self) -> None:
        self.backend.stop()
        super().destroy_node()


def wrench_in_base(snapshot: ArmSnapshot) -> np.ndarray:
    """The wrench rotated into the base frame (both backends report it in a frame aligned with the tool)."""
    rotation = quat_to_matrix(snapshot.orientation)
    return np.concatenate([rotation @ snapshot.wrench[:3], rotation @ snapshot.wrench[3:]])


def main(argv: list[str] | None = None) -> int:
    return run_node(vocab.DRIVER_NODE, FrankaDriverNode, argv, startup_errors=(RuntimeError, TimeoutError))


if __name__ == "__main__":
    sys.exit(main())
