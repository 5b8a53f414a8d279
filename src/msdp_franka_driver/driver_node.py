"""Franka driver node: a thin rclpy adapter around a backend (simulated MuJoCo arm or real libfranka arm).

Topics (base frame ``fr3_link0``, SI units):
  publishes  /joint_states (sensor_msgs/JointState), /franka/ee_pose (geometry_msgs/PoseStamped),
             /msdp/markers (workspace box, target, wrench arrow), /diagnostics (1 Hz: control loop health);
             mujoco backend also /camera/image_raw (rgb8), /ft_sensor/wrench (frame ``ft_sensor``), /clock,
             and /msdp/task_goal (latched PoseStamped: the episode's goal, e.g. the peg hole, yaw about z)
  subscribes /franka/equilibrium_pose (geometry_msgs/PoseStamped): the impedance target
  services   ~/reset, ~/recover (std_srvs/Trigger)
With the mujoco backend, stamps are simulated time and /clock is published: run the other nodes with
``use_sim_time`` when the simulation runs faster or slower than real time.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PoseStamped, WrenchStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from msdp.config import ConfigError, param_range
from msdp.markers import workspace_box_marker
from msdp.ros_node import run_node
from msdp.ros_params import declare_config
from msdp_franka_driver.backend import ArmBackend, ArmSnapshot
from msdp_franka_driver.control_law import ImpedanceConfig, SafetyConfig
from msdp_franka_driver.env import EnvConfig
from msdp_franka_driver.fr3_model import BASE_FRAME, CAMERA_FRAME, FT_FRAME, JOINT_NAMES
from msdp_franka_driver.libfranka_backend import LibfrankaConfig
from msdp_franka_driver.mujoco_backend import SimConfig
from msdp_franka_driver.pose import quat_to_matrix, yaw_quat
from msdp_franka_driver.tasks import TaskConfig

RETURN_TOLERANCE = 0.002  # m: ~/reset on the real arm is done this close to the start pose


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
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    libfranka: LibfrankaConfig = field(default_factory=LibfrankaConfig)


def make_backend(config: DriverConfig) -> ArmBackend:
    if config.backend == "mujoco":
        from msdp_franka_driver.sim_arm import MujocoArm

        env = EnvConfig(task=config.task, sim=config.sim, impedance=config.impedance, safety=config.safety)
        return MujocoArm(env, seed=config.seed)
    from msdp_franka_driver.libfranka_backend import LibfrankaArm

    return LibfrankaArm(config.libfranka, config.impedance, config.safety)


def stamp(seconds: float) -> Time:
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


class FrankaDriverNode(Node):
    def __init__(self):
        super().__init__("franka_driver")
        try:
            self.config = declare_config(self, DriverConfig)
        except ConfigError:
            super().destroy_node()
            raise
        self.backend = make_backend(self.config)
        self.simulated = self.config.backend == "mujoco"
        try:
            self.backend.start()
        except (RuntimeError, TimeoutError):
            super().destroy_node()
            raise
        self.target: PoseStamped | None = None
        start = self.backend.snapshot()
        self.start_pose = (start.position.copy(), start.orientation.copy())  # where ~/reset returns the real arm
        self.returning = False

        self.joint_pub = self.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
        self.pose_pub = self.create_publisher(PoseStamped, "/franka/ee_pose", qos_profile_sensor_data)
        self.marker_pub = self.create_publisher(MarkerArray, "/msdp/markers", 1)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self.publish_diagnostics)
        reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(PoseStamped, "/franka/equilibrium_pose", self.on_target, reliable)
        self.create_service(Trigger, "~/reset", self.on_reset)
        self.create_service(Trigger, "~/recover", self.on_recover)
        if self.simulated:
            self.wrench_pub = self.create_publisher(WrenchStamped, "/ft_sensor/wrench", qos_profile_sensor_data)
            self.image_pub = self.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
            self.clock_pub = self.create_publisher(Clock, "/clock", 10)
            self.sim_time_owed = 0.0  # s of simulated time the wall clock is ahead by
            self.next_camera_time = start.time
            latched = QoSProfile(
                depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
            )
            self.goal_pub = self.create_publisher(PoseStamped, "/msdp/task_goal", latched)
            self.publish_task_goal()
        self.create_timer(1.0 / self.config.state_rate, self.on_tick)
        if self.config.marker_rate > 0:
            self.create_timer(1.0 / self.config.marker_rate, self.publish_markers)
        self.get_logger().info(f"franka driver up: backend {self.config.backend}")

    # -- time ----------------------------------------------------------------------------------
    def now_msg(self, snapshot: ArmSnapshot) -> Time:
        return stamp(snapshot.time) if self.simulated else self.get_clock().now().to_msg()

    # -- callbacks -----------------------------------------------------------------------------
    def on_tick(self) -> None:
        """Real arm: publish its state. Simulation: run the simulated time owed since the last tick in steps of
        one state period, publishing state (and camera frames when due) at simulated-time rates."""
        if not self.simulated:
            self.publish_state(self.backend.snapshot())
            return
        period = 1.0 / self.config.state_rate
        self.sim_time_owed += self.config.real_time_factor * period
        while self.sim_time_owed >= period / 2:
            self.sim_time_owed -= period
            self.backend.advance(period)
            snapshot = self.backend.snapshot()
            self.publish_state(snapshot)
            if self.config.camera_rate > 0 and snapshot.time >= self.next_camera_time - 1e-6:
                self.publish_image(snapshot)
                self.next_camera_time += 1.0 / self.config.camera_rate

    def publish_state(self, snapshot: ArmSnapshot) -> None:
        if self.returning:  # stream the start pose (the watchdog stays quiet) until the arm is there
            self.backend.set_target(*self.start_pose)
            self.returning = np.linalg.norm(snapshot.position - self.start_pose[0]) > RETURN_TOLERANCE
        now = self.now_msg(snapshot)
        if self.simulated:
            self.clock_pub.publish(Clock(clock=now))
            wrench = WrenchStamped()
            wrench.header.stamp, wrench.header.frame_id = now, FT_FRAME
            f, t = snapshot.wrench[:3], snapshot.wrench[3:]
            wrench.wrench.force.x, wrench.wrench.force.y, wrench.wrench.force.z = map(float, f)
            wrench.wrench.torque.x, wrench.wrench.torque.y, wrench.wrench.torque.z = map(float, t)
            self.wrench_pub.publish(wrench)
        joints = JointState(name=list(JOINT_NAMES))
        joints.header.stamp = now
        joints.position, joints.velocity, joints.effort = (
            list(map(float, v)) for v in (snapshot.q, snapshot.dq, snapshot.tau)
        )
        self.joint_pub.publish(joints)
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = now, BASE_FRAME
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(float, snapshot.position)
        o = pose.pose.orientation
        o.x, o.y, o.z, o.w = map(float, snapshot.orientation)
        self.pose_pub.publish(pose)

    def on_target(self, msg: PoseStamped) -> None:
        if msg.header.frame_id not in ("", BASE_FRAME):
            self.get_logger().warning(
                f"target rejected: frame '{msg.header.frame_id}', expected '{BASE_FRAME}'", throttle_duration_sec=1.0
            )
            return
        p, o = msg.pose.position, msg.pose.orientation
        position, orientation = np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w])
        if not self.backend.set_target(position, orientation):
            self.get_logger().warning(
                f"target rejected: non-finite or zero-norm pose {position} {orientation}; holding the previous target",
                throttle_duration_sec=1.0,
            )
            return
        self.target = msg
        self.returning = False

    def on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Simulation: re-randomise the scene. Real arm: move back to the pose it had at start-up."""
        self.target = None
        if self.simulated:
            response.success, response.message = True, self.backend.reset()
            self.publish_task_goal()
        else:
            self.returning = True
            position = ", ".join(f"{v:.3f}" for v in self.start_pose[0])
            response.success, response.message = True, f"returning to the start pose ({position}) m"
        return response

    def publish_task_goal(self) -> None:
        """Simulation: the episode's goal pose (e.g. the peg hole), for the policy node's reward and success."""
        env = self.backend.env
        goal = env.task.goal_pose(env.task.privileged_state(env.sim))
        if goal is None:
            return
        msg = PoseStamped()
        msg.header.stamp, msg.header.frame_id = self.now_msg(self.backend.snapshot()), BASE_FRAME
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in goal[0])
        o = msg.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in yaw_quat(goal[1]))
        self.goal_pub.publish(msg)

    def on_recover(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            response.message = self.backend.recover()
            response.success = True
        except RuntimeError as exc:
            response.success, response.message = False, f"recovery failed: {exc}"
        return response

    def publish_diagnostics(self) -> None:
        """Control-loop health: the real loop's period statistics and faults; rejected targets for both."""
        status = DiagnosticStatus(name="franka_driver: control loop", hardware_id=self.config.backend)
        values = {"holding": str(self.backend.snapshot().holding)}
        status.level, status.message = DiagnosticStatus.OK, "running"
        if self.simulated:
            values["rejected_targets"] = str(self.backend.sim.controller.safety.rejected)
            values["sim_time_s"] = f"{self.backend.sim.time:.3f}"
        else:
            phase = self.backend.phase()
            stats = self.backend.loop_stats()
            values.update(
                phase=phase,
                period_p50_ms=f"{stats.period_p50_ms:.3f}",
                period_p99_ms=f"{stats.period_p99_ms:.3f}",
                period_max_ms=f"{stats.period_max_ms:.3f}",
                lost_cycles=str(stats.lost_cycles),
                command_success_rate=f"{stats.command_success_rate:.4f}",
                aborts=str(stats.aborts),
                rejected_targets=str(stats.rejected_targets),
                last_error=stats.last_error,
            )
            if phase != "running":
                status.level, status.message = DiagnosticStatus.ERROR, f"{phase}: {stats.last_error} (call ~/recover)"
                self.get_logger().error(f"control loop {status.message}", throttle_duration_sec=5.0)
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def publish_image(self, snapshot: ArmSnapshot) -> None:
        image = self.backend.image()
        msg = Image(height=image.shape[0], width=image.shape[1], encoding="rgb8", step=3 * image.shape[1])
        msg.header.stamp, msg.header.frame_id = self.now_msg(snapshot), CAMERA_FRAME
        msg.data = image.tobytes()
        self.image_pub.publish(msg)

    def publish_markers(self) -> None:
        snapshot = self.backend.snapshot()
        now = self.now_msg(snapshot)
        markers = MarkerArray(
            markers=[
                workspace_box_marker(
                    self.config.safety.workspace_min, self.config.safety.workspace_max, now, "workspace"
                ),
                self.wrench_marker(now, snapshot),
            ]
        )
        if self.target is not None:
            target = Marker(ns="target", id=0, type=Marker.SPHERE, action=Marker.ADD)
            target.header.stamp, target.header.frame_id = now, BASE_FRAME
            target.pose = self.target.pose
            target.scale.x = target.scale.y = target.scale.z = 0.02
            target.color.r, target.color.g, target.color.a = 1.0, 0.6, 0.9
            markers.markers.append(target)
        self.marker_pub.publish(markers)

    def wrench_marker(self, now: Time, snapshot: ArmSnapshot) -> Marker:
        arrow = Marker(ns="wrench", id=0, type=Marker.ARROW, action=Marker.ADD)
        arrow.header.stamp, arrow.header.frame_id = now, BASE_FRAME
        arrow.pose.orientation.w = 1.0
        force = self.wrench_in_base(snapshot)[:3] * 0.01  # 1 cm per N, drawn from the tool tip
        tip = snapshot.position
        end = tip + force
        arrow.points = [Point(x=tip[0], y=tip[1], z=tip[2]), Point(x=end[0], y=end[1], z=end[2])]
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.005, 0.01, 0.01
        arrow.color.r, arrow.color.a = 1.0, 0.9
        return arrow

    @staticmethod
    def wrench_in_base(snapshot: ArmSnapshot) -> np.ndarray:
        """The wrench rotated into the base frame (both backends report it in a frame aligned with the tool)."""
        rotation = quat_to_matrix(snapshot.orientation)
        return np.concatenate([rotation @ snapshot.wrench[:3], rotation @ snapshot.wrench[3:]])

    def destroy_node(self) -> None:
        self.backend.stop()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    return run_node("franka_driver", FrankaDriverNode, argv, startup_errors=(RuntimeError, TimeoutError))


if __name__ == "__main__":
    sys.exit(main())
