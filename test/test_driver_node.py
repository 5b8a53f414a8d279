"""The driver node with the simulated arm, as a real process talking over DDS (isolated domain)."""

import math
import subprocess
import sys

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped, WrenchStamped
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import Trigger

from ros_harness import Probe, node_process

pytestmark = pytest.mark.ros
DRIVER = "msdp_franka_driver.driver_node"


class DriverProbe(Probe):
    def __init__(self):
        super().__init__("driver_probe")
        self.poses: list[np.ndarray] = []
        self.latest: dict[str, object] = {}
        self.node.create_subscription(PoseStamped, "/franka/ee_pose", self.on_pose, qos_profile_sensor_data)
        for topic, kind in (
            ("/joint_states", JointState),
            ("/camera/image_raw", Image),
            ("/ft_sensor/wrench", WrenchStamped),
        ):
            self.node.create_subscription(
                kind, topic, lambda m, t=topic: self.latest.__setitem__(t, m), qos_profile_sensor_data
            )
        self.target_pub = self.node.create_publisher(PoseStamped, "/franka/equilibrium_pose", 1)
        self.orientation = None

    def on_pose(self, msg: PoseStamped) -> None:
        p, o = msg.pose.position, msg.pose.orientation
        self.poses.append(np.array([p.x, p.y, p.z]))
        self.orientation = (o.x, o.y, o.z, o.w)

    def position(self) -> np.ndarray:
        return self.poses[-1]

    def wait_ready(self) -> None:
        assert self.spin_until(lambda: self.poses and self.target_pub.get_subscription_count() > 0, 30.0), (
            "driver did not come up"
        )

    def send(self, position, orientation=None) -> None:
        msg = PoseStamped()
        msg.header.frame_id = "fr3_link0"
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = map(float, position)
        o = msg.pose.orientation
        o.x, o.y, o.z, o.w = orientation or self.orientation
        self.target_pub.publish(msg)

    def call_reset(self) -> Trigger.Response:
        """Call the driver's ~/reset service and wait for its answer."""
        client = self.node.create_client(Trigger, "/franka_driver/reset")
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(Trigger.Request())
        assert self.spin_until(future.done, 10.0)
        return future.result()

    def stream(self, position, seconds: float, rate: float = 20.0) -> None:
        for _ in range(int(seconds * rate)):
            self.send(position)
            self.spin_for(1.0 / rate)


@pytest.fixture
def driver(tmp_path, request):
    params = getattr(request, "param", {})
    with node_process(DRIVER, {"camera_rate": 10.0, **params}, tmp_path / "driver.log") as process:
        probe = DriverProbe()
        try:
            probe.wait_ready()
            yield probe, process, tmp_path / "driver.log"
        finally:
            probe.close()


def test_published_target_moves_the_end_effector_toward_it(driver):
    probe, _, _ = driver
    start = probe.position().copy()
    target = start + [0.04, -0.03, -0.02]
    probe.stream(target, seconds=3.0)
    assert np.linalg.norm(probe.position() - target) < 0.005
    # The simulated sensors are on the wire too.
    image = probe.latest["/camera/image_raw"]
    assert (image.width, image.height, image.encoding) == (64, 64, "rgb8")
    assert probe.latest["/ft_sensor/wrench"].header.frame_id == "ft_sensor"
    assert list(probe.latest["/joint_states"].name) == [f"fr3_joint{i}" for i in range(1, 8)]


@pytest.mark.parametrize("driver", [{"impedance.translational_stiffness": 300.0}], indirect=True)
def test_a_stale_target_makes_the_driver_hold_pose(driver):
    probe, _, _ = driver
    start = probe.position().copy()
    target = start + [0.12, 0.0, 0.0]
    probe.send(target)  # once, then silence: the 200 ms watchdog must stop the motion part-way
    probe.spin_for(1.5)
    held = probe.position().copy()
    probe.spin_for(1.0)
    assert np.linalg.norm(probe.position() - held) < 0.001
    assert 0.005 < held[0] - start[0] < 0.12 - 0.02


def test_a_non_finite_target_is_rejected_with_a_warning_and_the_pose_stays(driver):
    probe, _, log = driver
    start = probe.position().copy()
    for _ in range(10):
        probe.send([math.nan, start[1], start[2]])
        probe.send(start + 0.03, orientation=(0.0, 0.0, math.inf, 1.0))
        probe.spin_for(0.1)
    assert np.linalg.norm(probe.position() - start) < 0.001
    assert "target rejected: non-finite" in log.read_text()


def test_reset_service_re_randomises_and_answers(driver):
    probe, _, _ = driver
    before = probe.position().copy()
    response = probe.call_reset()
    assert response.success and "reset" in response.message
    probe.spin_for(0.5)
    assert np.linalg.norm(probe.position() - before) > 0.005  # a new scene, a new start pose


@pytest.mark.parametrize(
    "override, message",
    [
        ("impedance.translational_stiffness:=-100.0", "'impedance.translational_stiffness': -100.0 is outside"),
        ("safety.workspace_min:=[0.3,0.0,0.9]", "'safety.workspace_min[2]' (0.9) must be below"),
        ("backend:=gazebo", "'backend': 'gazebo' is not one of mujoco, libfranka"),
    ],
)
def test_bad_parameters_stop_the_node_with_an_error_naming_them(override, message):
    result = subprocess.run(
        [sys.executable, "-m", DRIVER, "--ros-args", "-p", override], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_an_unreachable_robot_stops_the_node_with_an_error_naming_it():
    params = ["-p", "backend:=libfranka", "-p", "libfranka.robot_ip:=127.0.0.77", "-p", "libfranka.realtime:=ignore"]
    result = subprocess.run(
        [sys.executable, "-m", DRIVER, "--ros-args", *params], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "127.0.0.77" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.franka_sim
def test_driver_node_drives_the_libfranka_backend_against_franka_sim(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray

    from franka_sim_server import EE_OFFSET, franka_sim_server, require_franka_sim

    require_franka_sim()
    with franka_sim_server() as sim:
        params = {
            "backend": "libfranka",
            "libfranka.robot_ip": sim.host,
            "libfranka.realtime": "ignore",
            "libfranka.ee_offset": list(EE_OFFSET),
        }
        with node_process(DRIVER, params, tmp_path / "driver.log"):
            probe = DriverProbe()
            diagnostics: list[DiagnosticArray] = []
            probe.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
            try:
                probe.wait_ready()
                start = probe.position().copy()
                target = start + [0.0, 0.04, -0.03]
                probe.stream(target, seconds=3.0)
                assert np.linalg.norm(probe.position() - target) < 0.005
                assert probe.spin_until(lambda: diagnostics, 5.0)
                values = {kv.key: kv.value for kv in diagnostics[-1].status[0].values}
                assert values["phase"] == "running" and values["aborts"] == "0"
                assert 0.5 < float(values["period_p50_ms"]) < 1.5

                assert probe.call_reset().success
                probe.spin_for(3.0)  # no targets from us: the driver streams the start pose itself
                assert np.linalg.norm(probe.position() - start) < 0.003
            finally:
                probe.close()
