"""The driver node with the simulated arm, as a real process talking over DDS (isolated domain)."""

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, WrenchStamped
from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from visualization_msgs.msg import Marker, MarkerArray

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
        return self.call("/franka_driver/reset")

    def call(self, service: str) -> Trigger.Response:
        """Call one of the driver's Trigger services and wait for its answer."""
        client = self.node.create_client(Trigger, service)
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(Trigger.Request())
        assert self.spin_until(future.done, 10.0)
        return future.result()

    def call_service(self, kind, service: str, request):
        """Call a driver service and wait for its answer."""
        client = self.node.create_client(kind, service)
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(request)
        assert self.spin_until(future.done, 10.0)
        return future.result()

    def hand_guide(self, on: bool) -> SetBool.Response:
        return self.call_service(SetBool, "/franka_driver/hand_guide", SetBool.Request(data=on))

    def set_parameter(self, name: str, value) -> SetParametersResult:
        """What ``ros2 param set /franka_driver <name> <value>`` does: one SetParameters call."""
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        (result,) = self.call_service(SetParameters, "/franka_driver/set_parameters", request).results
        return result

    def get_parameter(self, name: str):
        request = GetParameters.Request(names=[name])
        (value,) = self.call_service(GetParameters, "/franka_driver/get_parameters", request).values
        return parameter_value_to_python(value)

    def stream(self, position, seconds: float, rate: float = 20.0) -> None:
        for _ in range(int(seconds * rate)):
            self.send(position)
            self.spin_for(1.0 / rate)


class WatchingProbe(DriverProbe):
    """Also listens to what the driver reports: /diagnostics, /msdp/markers and the latched /franka/status."""

    def __init__(self):
        super().__init__()
        self.diagnostics: list[DiagnosticStatus] = []
        self.diagnostic_stamps: list[float] = []  # s, the arrays' header stamps
        self.markers: list[MarkerArray] = []
        self.statuses: list[str] = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)
        self.node.create_subscription(MarkerArray, "/msdp/markers", self.markers.append, 1)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.node.create_subscription(String, "/franka/status", lambda m: self.statuses.append(m.data), latched)

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "franka_driver: control loop":
                self.diagnostics.append(status)
                self.diagnostic_stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)

    def next_diagnostics(self, timeout: float = 3.0) -> DiagnosticStatus:
        """The next control-loop status published from now on."""
        count = len(self.diagnostics)
        assert self.spin_until(lambda: len(self.diagnostics) > count, timeout), "no /diagnostics from the driver"
        return self.diagnostics[-1]

    def next_markers(self, timeout: float = 3.0) -> dict[str, Marker]:
        """The next /msdp/markers array, by namespace."""
        count = len(self.markers)
        assert self.spin_until(lambda: len(self.markers) > count, timeout), "no /msdp/markers from the driver"
        return {marker.ns: marker for marker in self.markers[-1].markers}


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


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


@pytest.fixture
def watched_driver(tmp_path, request):
    params = getattr(request, "param", {})
    with node_process(DRIVER, {"camera_rate": 0.0, **params}, tmp_path / "driver.log") as process:
        probe = WatchingProbe()
        try:
            probe.wait_ready()
            yield probe, process, tmp_path / "driver.log"
        finally:
            probe.close()


WORKSPACE_MIN, WORKSPACE_MAX = (0.2, -0.4, 0.005), (0.8, 0.3, 0.7)  # not the defaults: the marker must read them


@pytest.mark.parametrize(
    "watched_driver",
    [{"safety.workspace_min": "[0.2,-0.4,0.005]", "safety.workspace_max": "[0.8,0.3,0.7]"}],
    indirect=True,
)
def test_driver_reports_its_health_status_and_markers(watched_driver):
    probe, _, _ = watched_driver
    # /franka/status: "running", on a latched (transient local) publisher, so late joiners learn it
    assert probe.spin_until(lambda: probe.statuses, 3.0) and probe.statuses[-1] == "running"
    (info,) = probe.node.get_publishers_info_by_topic("/franka/status")
    assert info.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL

    # /diagnostics: one "franka_driver: control loop" status at about 1 Hz, level OK, the backend's figures
    first = probe.next_diagnostics()
    for _ in range(2):
        probe.next_diagnostics(timeout=2.0)
    periods = np.diff(probe.diagnostic_stamps[-3:])
    assert 0.8 < np.mean(periods) < 1.25 and np.all(periods > 0.3), periods
    status = probe.diagnostics[-1]
    assert status.level == DiagnosticStatus.OK and status.message == "running"
    assert status.hardware_id == "franka_driver"
    assert {"holding", "rejected_targets", "sim_time_s"} <= set(values(status))
    assert values(status)["holding"] == "True" and values(status)["rejected_targets"] == "0"
    sim_times = [float(values(s)["sim_time_s"]) for s in (first, status)]
    assert 1.0 < sim_times[1] - sim_times[0] < 3.0  # two periods of about 1 s (real_time_factor 1)

    # /msdp/markers: the configured workspace box, the wrench arrow from the tool tip, no target yet
    markers = probe.next_markers()
    assert "target" not in markers
    box = markers["workspace"]
    assert box.type == Marker.LINE_LIST and box.header.frame_id == "fr3_link0"
    assert len(box.points) == 24  # 12 edges
    points = [(p.x, p.y, p.z) for p in box.points]
    corners = set(itertools.product(*zip(WORKSPACE_MIN, WORKSPACE_MAX, strict=True)))
    assert set(points) == corners
    edges = {frozenset(points[i : i + 2]) for i in range(0, 24, 2)}
    assert len(edges) == 12
    for a, b in map(tuple, edges):
        assert sum(u != v for u, v in zip(a, b, strict=True)) == 1  # an edge, not a diagonal
    arrow = markers["wrench"]
    assert arrow.type == Marker.ARROW and len(arrow.points) == 2
    tail = np.array([arrow.points[0].x, arrow.points[0].y, arrow.points[0].z])
    assert np.linalg.norm(tail - probe.position()) < 0.005  # from the tool tip
    head = np.array([arrow.points[1].x, arrow.points[1].y, arrow.points[1].z])
    assert np.linalg.norm(head - tail) < 0.05  # a free tool at rest: (nearly) no force

    # a target: the marker shows it; while targets stream the arm follows (not holding), after they stop it holds
    count = len(probe.diagnostics)
    target = probe.position() + [0.0, 0.0, 0.02]
    probe.stream(target, seconds=1.5)
    sphere = probe.next_markers()["target"]
    assert sphere.type == Marker.SPHERE and sphere.header.frame_id == "fr3_link0"
    np.testing.assert_allclose([sphere.pose.position.x, sphere.pose.position.y, sphere.pose.position.z], target)
    assert "False" in [values(s)["holding"] for s in probe.diagnostics[count:]]
    assert values(probe.next_diagnostics())["holding"] == "True"  # the watchdog, 200 ms after the last target

    # non-finite targets are counted in rejected_targets (one each), and the status stays OK
    start = probe.position().copy()
    for _ in range(3):
        probe.send([math.nan, start[1], start[2]])
        probe.spin_for(0.25)
    assert probe.spin_until(lambda: values(probe.diagnostics[-1])["rejected_targets"] == "3", 3.0), values(
        probe.diagnostics[-1]
    )
    assert probe.diagnostics[-1].level == DiagnosticStatus.OK


@pytest.mark.parametrize("watched_driver", [{"sim.reflex_force": 5.0}], indirect=True)
def test_a_reflex_faults_the_driver_until_recover(watched_driver):
    probe, _, log = watched_driver
    assert probe.spin_until(lambda: probe.statuses, 3.0) and probe.statuses[-1] == "running"

    # push the tool down into the fixture until the force on it exceeds sim.reflex_force
    def faulted() -> bool:
        return probe.statuses[-1].startswith("fault: ")

    for _ in range(200):
        if faulted():
            break
        probe.send(probe.position() - [0.0, 0.0, 0.05])
        probe.spin_for(0.05)
    assert faulted(), f"no reflex; status {probe.statuses[-1]!r}"
    assert probe.statuses[-1].startswith("fault: cartesian_reflex: ") and "sim.reflex_force 5.0 N" in probe.statuses[-1]
    status = probe.next_diagnostics()
    assert status.level == DiagnosticStatus.ERROR
    assert "cartesian_reflex" in status.message and "~/recover" in status.message
    assert "arm stopped: cartesian_reflex" in log.read_text()

    # stopped: reset is refused, targets are ignored
    response = probe.call("/franka_driver/reset")
    assert not response.success and "cannot reset" in response.message and "cartesian_reflex" in response.message
    held = probe.position().copy()
    probe.stream(held + [0.0, 0.0, 0.03], seconds=1.0)
    assert np.linalg.norm(probe.position() - held) < 0.003
    assert faulted()

    # ~/recover clears it: running again, level OK, and targets are followed
    response = probe.call("/franka_driver/recover")
    assert response.success and "recovered from cartesian_reflex" in response.message
    assert probe.spin_until(lambda: probe.statuses[-1] == "running", 3.0), probe.statuses[-1]
    assert probe.next_diagnostics().level == DiagnosticStatus.OK
    target = probe.position() + [0.0, 0.0, 0.03]
    probe.stream(target, seconds=1.5)
    assert np.linalg.norm(probe.position() - target) < 0.005
    assert probe.statuses[-1] == "running"
    assert probe.call("/franka_driver/reset").success


@pytest.mark.parametrize("watched_driver", [{"impedance.gain_ramp_time": 2.5}], indirect=True)
def test_impedance_gains_change_at_run_time_validated_and_ramped(watched_driver):
    probe, _, log = watched_driver
    assert values(probe.next_diagnostics())["translational_stiffness"] == "2000"
    assert probe.set_parameter("impedance.translational_stiffness", 800.0).successful
    assert probe.get_parameter("impedance.translational_stiffness") == 800.0
    probe.next_diagnostics()
    ramping = float(values(probe.next_diagnostics())["translational_stiffness"])  # 1 to 2 s into the ramp
    assert 800.0 < ramping < 2000.0  # ramped over impedance.gain_ramp_time, not at once
    assert probe.spin_until(lambda: values(probe.diagnostics[-1])["translational_stiffness"] == "800", 3.0)

    for name, value, reason in [
        ("impedance.translational_stiffness", 7000.0, "'impedance.translational_stiffness': 7000.0 is outside"),
        ("impedance.rotational_stiffness", "stiff", "'impedance.rotational_stiffness': expected a number"),
        ("impedance.max_torque_rate", 0.9, "'impedance.max_torque_rate' is fixed while the driver runs"),
        ("safety.max_target_speed", 0.5, "'safety.max_target_speed' is fixed while the driver runs"),
    ]:
        result = probe.set_parameter(name, value)
        assert not result.successful and reason in result.reason, result.reason
    assert probe.get_parameter("impedance.translational_stiffness") == 800.0  # the old gain stays
    assert probe.get_parameter("safety.max_target_speed") == 0.3
    assert values(probe.next_diagnostics())["translational_stiffness"] == "800"
    assert "parameter change refused: parameter 'impedance.translational_stiffness'" in log.read_text()


@pytest.mark.slow  # make test-slow: the hand-guided demonstration (test_teleop_node) runs in make test
@pytest.mark.parametrize("watched_driver", [{"sim.reflex_force": 30.0}], indirect=True)
def test_hand_guiding_lets_a_simulated_hand_move_the_arm_which_stays_where_left(watched_driver):
    probe, _, log = watched_driver
    response = probe.hand_guide(True)
    assert response.success and "hand guiding" in response.message
    probe.spin_for(1.2)  # the gains ramp down to hand_guiding.* (impedance.gain_ramp_time, 1 s)
    status = probe.next_diagnostics()
    assert status.message == "hand guiding" and values(status)["hand_guiding"] == "True"
    assert values(status)["translational_stiffness"] == "30"
    assert not probe.call_reset().success

    # a hand pushes the tool along y for a moment, while a policy would keep it where it was: the arm follows the hand
    start = probe.position().copy()
    assert probe.set_parameter("sim.hand_force", [0.0, 4.0, 0.0]).successful
    probe.stream(start, seconds=0.6)
    assert probe.set_parameter("sim.hand_force", [0.0, 0.0, 0.0]).successful
    probe.stream(start, seconds=1.0)
    moved = probe.position() - start
    assert 0.02 < moved[1] < 0.3 and abs(moved[0]) < 0.03, moved
    assert "target ignored: hand guiding" in log.read_text()

    # hand guiding off: the arm holds where it was left (no spring back to where it started), follows targets again
    response = probe.hand_guide(False)
    assert response.success and "ended" in response.message
    left = probe.position().copy()
    probe.spin_for(1.5)  # the gains ramp back up to impedance.*
    assert np.linalg.norm(probe.position() - left) < 0.003
    status = probe.next_diagnostics()
    assert status.message == "running" and values(status)["hand_guiding"] == "False"
    assert values(status)["translational_stiffness"] == "2000" and values(status)["holding"] == "True"
    target = left + [0.0, 0.0, 0.02]
    probe.stream(target, seconds=1.0)
    assert np.linalg.norm(probe.position() - target) < 0.005

    # a fault while hand guiding (a hand pushing harder than sim.reflex_force) ends it, as any fault stops the arm
    assert probe.hand_guide(True).success
    assert probe.set_parameter("sim.hand_force", [0.0, 0.0, -40.0]).successful
    assert probe.spin_until(lambda: probe.statuses[-1].startswith("fault: cartesian_reflex"), 3.0), probe.statuses
    assert probe.set_parameter("sim.hand_force", [0.0, 0.0, 0.0]).successful
    assert values(probe.next_diagnostics())["hand_guiding"] == "False"
    response = probe.hand_guide(True)
    assert not response.success and "cannot hand guide" in response.message and "~/recover" in response.message
    assert probe.call("/franka_driver/recover").success
    assert values(probe.next_diagnostics())["hand_guiding"] == "False"


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


def assert_one_line_naming_the_typo(result: subprocess.CompletedProcess, typo: str, meant: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"'{typo}'" in lines[0] and f"did you mean '{meant}'" in lines[0]
    assert "Traceback" not in result.stderr


def test_an_unknown_parameter_stops_the_node_naming_the_nearest_one():
    result = subprocess.run(
        [sys.executable, "-m", DRIVER, "--ros-args", "-p", "impedance.translational_stifness:=100.0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert_one_line_naming_the_typo(result, "impedance.translational_stifness", "impedance.translational_stiffness")


def test_a_typo_in_a_params_file_stops_the_node_naming_the_nearest_one(tmp_path):
    params = tmp_path / "driver.yaml"
    params.write_text(
        "franka_driver:\n  ros__parameters:\n    state_rate: 50.0\n    safety:\n      watchdog_timout: 0.3\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", DRIVER, "--ros-args", "--params-file", str(params)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert_one_line_naming_the_typo(result, "safety.watchdog_timout", "safety.watchdog_timeout")


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
