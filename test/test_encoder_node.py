"""The encoder node over real DDS: recorded sensor messages in, the same embedding as the in-process encoder out.

The test drives simulated time itself (/clock), so it knows exactly which messages each observation saw.
"""

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import WrenchStamped
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState

from msdp.vocabulary import stamp_seconds, wrench_array
from msdp_franka_driver.sim.collect import CollectConfig, collect_to_bags
from msdp_perception.bags import TYPESTORE, open_bag
from msdp_perception.checkpoint import save_encoder
from msdp_perception.encoder import FrozenEncoder, pack_embedding
from msdp_perception.messages import image_from_msg, proprio_from_joint_state
from msdp_perception.model import MSDPConfig, MSDPModel
from msdp_perception.observation import SensorSynchronizer
from msdp_policy.tasks import TaskConfig
from ros_harness import Probe, node_process

pytestmark = pytest.mark.ros

TYPES = {"/camera/image_raw": Image, "/ft_sensor/wrench": WrenchStamped, "/joint_states": JointState}
STEPS, WRENCH_DIES_AT = 18, 6


def recorded_steps(tmp_path):
    """Messages of a short simulated recording, grouped by the camera frame (observation) they precede."""
    config = CollectConfig(samples=STEPS, task=TaskConfig(max_episode_steps=50), seed=3)
    bag = collect_to_bags(tmp_path / "bags", config, progress=False)[0]
    messages = []
    for topic, msgtype, _, msg in open_bag(bag):
        if topic in TYPES:
            ros_msg = deserialize_message(bytes(TYPESTORE.serialize_cdr(msg, msgtype)), TYPES[topic])
            messages.append((stamp_seconds(ros_msg.header), topic, ros_msg))
    messages.sort(key=lambda m: (m[0], m[1] == "/camera/image_raw"))
    steps, current = [], []
    for _, topic, msg in messages:
        current.append((topic, msg))
        if topic == "/camera/image_raw":
            steps.append((msg.header.stamp, current))
            current = []
    return steps[:STEPS]


def test_embeddings_match_the_in_process_encoder_and_a_dead_wrench_is_masked(tmp_path):
    torch.manual_seed(0)
    model = MSDPModel(MSDPConfig(stem_channels=8, width=32, decoder_width=32))
    checkpoint = save_encoder(tmp_path / "encoder", model)
    encoder = FrozenEncoder(model)
    steps = recorded_steps(tmp_path)
    assert len(steps) == STEPS

    params = {"checkpoint": str(checkpoint), "use_sim_time": True, "reconstruction_rate": 2.0}
    with node_process("msdp_perception.encoder_node", params, tmp_path / "encoder.log"):
        probe = Probe()
        try:
            reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
            pubs = {topic: probe.node.create_publisher(kind, topic, reliable) for topic, kind in TYPES.items()}
            clock = probe.node.create_publisher(Clock, "/clock", 10)
            embeddings, reconstructions, diagnostics = {}, [], []
            probe.node.create_subscription(
                Image, "/msdp/embedding", lambda m: embeddings.__setitem__(stamp_seconds(m.header), m), reliable
            )
            probe.node.create_subscription(Image, "/msdp/reconstruction", reconstructions.append, 10)
            probe.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
            everything = [*pubs.values(), clock]
            ready = probe.spin_until(lambda: all(p.get_subscription_count() for p in everything), 30.0)
            assert ready, (tmp_path / "encoder.log").read_text()
            probe.spin_for(1.0)  # the node's side of discovery may finish after ours

            offline = SensorSynchronizer()
            for k, (stamp, step_messages) in enumerate(steps):
                for topic, msg in step_messages:
                    if topic == "/ft_sensor/wrench" and k >= WRENCH_DIES_AT:
                        continue  # the wrench stream dies
                    pubs[topic].publish(msg)
                    t = stamp_seconds(msg.header)
                    if topic == "/camera/image_raw":
                        offline.add_image(t, image_from_msg(msg, 64))
                    elif topic == "/ft_sensor/wrench":
                        offline.add_wrench(t, wrench_array(msg))
                    else:
                        offline.add_joint_state(t, proprio_from_joint_state(msg))
                probe.spin_for(0.5)  # let every sensor message land before time moves on (0.2 s flaked under load)
                clock.publish(Clock(clock=stamp))
                t = stamp.sec + stamp.nanosec * 1e-9
                log = tmp_path / "encoder.log"
                assert probe.spin_until(lambda t=t: t in embeddings, 10.0), f"no embedding at {t}: {log.read_text()}"

                observation = offline.observe(t)
                assert observation.present["ft"] == (k < WRENCH_DIES_AT)
                received = embeddings[t]
                rows = np.frombuffer(bytes(received.data), np.float32).reshape(received.height, received.width)
                assert (received.encoding, rows.shape) == ("32FC1", (67, 32))
                np.testing.assert_allclose(rows, pack_embedding(encoder.encode(observation)), atol=1e-5, equal_nan=True)
                if k >= WRENCH_DIES_AT:
                    assert np.isnan(rows[64]).all() and np.isfinite(np.delete(rows, 64, 0)).all()
                else:
                    assert np.isfinite(rows).all()

            probe.spin_until(lambda: any(_ft_masked(d) for d in diagnostics), 5.0)
            assert any(_ft_masked(d) for d in diagnostics), [d.status[0].message for d in diagnostics]
            # the camera frame with its ROI outlined, then input, masked input and decoded, each scaled to 256 rows
            assert reconstructions and reconstructions[-1].encoding == "rgb8" and reconstructions[-1].width == 4 * 256
        finally:
            probe.close()


def _ft_masked(array: DiagnosticArray) -> bool:
    status = array.status[0]
    return status.name.startswith("msdp_encoder") and {kv.key: kv.value for kv in status.values}["ft_masked"] == "True"


@pytest.mark.slow  # make test-slow
def test_an_encoder_on_the_wrong_clock_says_so(tmp_path):
    """Next to the simulated arm (stamps on /clock) an encoder without use_sim_time sees every sensor as decades
    old: the masking reason says why and what to do."""
    checkpoint = save_encoder(tmp_path / "encoder", MSDPModel(MSDPConfig(stem_channels=8, width=32, decoder_width=32)))
    probe = Probe()
    statuses = []
    probe.node.create_subscription(
        DiagnosticArray, "/diagnostics", lambda m: statuses.extend(s for s in m.status if "msdp_encoder" in s.name), 10
    )
    driver = {"backend": "mujoco", "marker_rate": 0.0}
    try:
        with (
            node_process("msdp_franka_driver.driver_node", driver, tmp_path / "driver.log"),
            node_process("msdp_perception.encoder_node", {"checkpoint": str(checkpoint)}, tmp_path / "encoder.log"),
        ):
            hinted = lambda: any("use_sim_time:=true" in s.message for s in statuses)  # noqa: E731
            assert probe.spin_until(hinted, 60), [s.message for s in statuses][-3:]
        message = next(s.message for s in statuses if "use_sim_time:=true" in s.message)
        assert "behind this node's wall time" in message and "simulated time (/clock)" in message
    finally:
        probe.close()


def test_the_encoder_takes_its_wrench_from_the_chosen_source(tmp_path):
    """``wrench: franka_estimate`` reads the arm's own estimate: with the simulated sensors served elsewhere (no
    /ft_sensor/wrench, no camera topic), F/T is present and vision masked; an unknown source is one line, exit 2."""
    import socket
    import subprocess
    import sys

    checkpoint = save_encoder(tmp_path / "encoder", MSDPModel(MSDPConfig(stem_channels=8, width=32, decoder_width=32)))
    ports = {}
    for name, kind in (("camera_port", socket.SOCK_STREAM), ("ft_port", socket.SOCK_DGRAM),
                       ("ft_http_port", socket.SOCK_STREAM)):  # fmt: skip
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", 0))
            ports[f"virtual_cell.{name}"] = sock.getsockname()[1]
    driver = {"backend": "mujoco", "marker_rate": 0.0, "sim_sensors": "virtual_cell", **ports}
    encoder = {"checkpoint": str(checkpoint), "wrench": "franka_estimate", "use_sim_time": True}
    probe = Probe()
    statuses = []
    probe.node.create_subscription(
        DiagnosticArray, "/diagnostics", lambda m: statuses.extend(s for s in m.status if "msdp_encoder" in s.name), 10
    )
    try:
        with (
            node_process("msdp_franka_driver.driver_node", driver, tmp_path / "driver.log"),
            node_process("msdp_perception.encoder_node", encoder, tmp_path / "encoder.log"),
        ):

            def masked(status) -> dict[str, str]:
                return {kv.key: kv.value for kv in status.values if kv.key.endswith("_masked")}

            settled = lambda: any(masked(s) == {"vision_masked": "True", "ft_masked": "False",  # noqa: E731
                                                "proprio_masked": "False"} for s in statuses)  # fmt: skip
            assert probe.spin_until(settled, 60), [masked(s) for s in statuses][-3:]
    finally:
        probe.close()
    result = subprocess.run(
        [sys.executable, "-m", "msdp_perception.encoder_node", "--ros-args", "-p", f"checkpoint:={checkpoint}",
         "-p", "wrench:=ati_sensor"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "parameter 'wrench': 'ati_sensor' is not one of ati, franka_estimate" in (
        result.stderr
    ), result.stderr
