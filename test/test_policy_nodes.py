"""Online RL over ROS: simulated driver + encoder + policy + learner nodes, as separate processes over DDS.

A short run where transitions are logged, the learner updates and the policy receives new weights; the policy
node is killed (SIGKILL) and restarted without losing a logged transition; when the learner dies, the policy
keeps acting with the last weights.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float32, MultiArrayDimension, String, UInt8MultiArray
from std_srvs.srv import Trigger

from msdp_perception.checkpoint import save_encoder
from msdp_perception.model import MSDPConfig, MSDPModel
from msdp_policy.agent import Actor, AgentConfig
from msdp_policy.episodes import Goal, save_goal
from msdp_policy.learner import actor_to_bytes
from msdp_policy.policy import load_policy
from msdp_policy.tasks import TaskConfig
from msdp_policy.transition_log import TransitionReader
from ros_harness import Probe, node_process

pytestmark = pytest.mark.ros

WIDTH = 32


def wait_for(probe: Probe, condition, timeout: float, what: str, log=None) -> None:
    """Spin the probe (so it receives) until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        probe.spin_for(0.2)
    detail = f"\n--- {log}:\n{log.read_text()[-3000:]}" if log is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")


def log_count(folder) -> int:
    try:
        return len(TransitionReader(folder))
    except Exception:
        return 0


@pytest.mark.slow  # about 30 s: make test-slow
def test_policy_and_learner_nodes_learn_online_and_survive_kills(tmp_path):
    torch.manual_seed(0)
    encoder = save_encoder(tmp_path / "encoder", MSDPModel(MSDPConfig(stem_channels=8, width=WIDTH, decoder_width=32)))
    log = tmp_path / "online" / "transitions"
    sim = {"use_sim_time": True}
    driver = {"backend": "mujoco", "marker_rate": 0.0, "task.max_episode_steps": 15}
    enc = {"checkpoint": str(encoder), "reconstruction_rate": 0.0, **sim}
    agent = {"agent.hidden": 32, "agent.batch_size": 32}
    policy = {
        "transitions": str(log), "encoder_checkpoint": str(encoder), "task.max_episode_steps": 15,
        "settle_time": 0.2, "seed": 1, "random_steps": 40, **agent, **sim,
    }  # fmt: skip
    learner = {
        "transitions": str(log), "out": str(tmp_path / "online"), "encoder_checkpoint": str(encoder),
        "update_after": 40, "publish_every": 10, "checkpoint_every": 40, **agent,
    }  # fmt: skip
    logs = {name: tmp_path / f"{name}.log" for name in ("driver", "encoder", "policy", "policy2", "learner")}
    probe = Probe()
    weights, successes, rewards = [], [], []
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    probe.node.create_subscription(UInt8MultiArray, "/msdp/actor_weights", weights.append, latched)
    probe.node.create_subscription(Bool, "/msdp/success", successes.append, 10)
    probe.node.create_subscription(Float32, "/msdp/reward", rewards.append, 10)
    actions = []
    probe.node.create_subscription(TwistStamped, "/msdp/action", actions.append, 10)
    try:
        with (
            node_process("msdp_franka_driver.driver_node", driver, logs["driver"]),
            node_process("msdp_perception.encoder_node", enc, logs["encoder"]),
            node_process("msdp_policy.learner_node", learner, logs["learner"]) as learner_process,
        ):
            with node_process("msdp_policy.policy_node", policy, logs["policy"]) as first_policy:
                # transitions are logged, the learner updates and the policy swaps in its weights
                learned = re.compile(r"new actor weights: critic_updates=[1-9]")
                wait_for(
                    probe, lambda: learned.search(logs["policy"].read_text()), 150, "learned weights", logs["policy"]
                )
                wait_for(probe, lambda: log_count(log) >= 90, 120, "90 logged records", logs["policy"])
                os.killpg(first_policy.pid, signal.SIGKILL)
                first_policy.wait()
            before = TransitionReader(log).arrays
            killed_at = len(before["episode"])

            with node_process("msdp_policy.policy_node", policy, logs["policy2"]) as second_policy:
                wait_for(
                    probe, lambda: log_count(log) >= killed_at + 30, 120, "the restarted policy to log", logs["policy2"]
                )
                # the restarted node got the latest weights from the latched topic
                assert learned.search(logs["policy2"].read_text())
                # the learner dies: the policy keeps acting with the weights it has
                os.killpg(learner_process.pid, signal.SIGKILL)
                learner_process.wait()
                count = log_count(log)
                wait_for(
                    probe,
                    lambda: log_count(log) >= count + 20,
                    60,
                    "the policy to act without a learner",
                    logs["policy2"],
                )
                assert second_policy.poll() is None

        after = TransitionReader(log).arrays
        # nothing logged before the kill was lost (the record in flight is the most a kill may cost)
        for name, values in before.items():
            np.testing.assert_array_equal(after[name][:killed_at], values)
        old_episodes = set(before["episode"].tolist())
        assert not old_episodes & set(after["episode"][killed_at:].tolist()), "episodes must not link over a restart"
        # the learner's updates happened at the configured ratio, and its checkpoint loads as a policy
        learner_text = logs["learner"].read_text()
        updates = [int(n) for n in re.findall(r"checkpoint at (\d+) critic updates", learner_text)]
        assert updates and max(updates) >= 40, learner_text[-2000:]
        loaded = load_policy(tmp_path / "online" / "policy.safetensors")
        assert loaded.info.encoder_variant == "msdp_frozen" and loaded.info.action_dim == 4
        # rewards were published per step, finished episodes per episode
        assert len(rewards) > 50 and all(np.isfinite(r.data) and r.data <= 0 for r in rewards)
        finals = int(after["final"].sum())
        assert finals >= 5 and len(successes) >= 5
        # actions were published for the recorder, within the step limit
        assert len(actions) > 50
        assert max(abs(a.twist.linear.x) for a in actions) <= TaskConfig().max_step + 1e-9
        # published weights are versioned by critic updates, increasing
        labels = [int(re.search(r"critic_updates=(\d+)", w.layout.dim[0].label).group(1)) for w in weights]
        assert labels == sorted(labels)
    finally:
        probe.close()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"task.name": "push_cube"}, "scoring needs object states"),
        ({"task.max_step": 5.0}, "'task.max_step': 5.0 is outside"),
        ({"policy": "/nonexistent/policy.safetensors"}, "not found"),
        ({"encoder_checkpoint": "''"}, "'policy' or 'encoder_checkpoint' is required"),
        ({"encoder_checkpoint": ""}, "invalid ROS arguments"),
        ({"workspace_min": "[0.5, -0.3, 0.1]", "workspace_max": "[0.3, 0.3, 0.5]"}, "'workspace_min[0]' (0.5) must be"),
        ({"agent.hiden": 64}, "'agent.hiden' (did you mean 'agent.hidden'?)"),
    ],
    ids=["no-goal-task", "out-of-range", "missing-policy", "no-encoder", "malformed", "inverted-box", "misspelt"],
)
def test_the_policy_node_refuses_what_it_cannot_run_with_a_clear_error(tmp_path, params, message):
    encoder = save_encoder(tmp_path / "encoder", MSDPModel(MSDPConfig(stem_channels=8, width=WIDTH, decoder_width=32)))
    params = {"transitions": tmp_path / "log", "encoder_checkpoint": encoder, **params}
    args = [sys.executable, "-m", "msdp_policy.policy_node", "--ros-args"]
    args += [a for key, value in params.items() for a in ("-p", f"{key}:={value}")]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode in (1, 2) and message in result.stderr, result.stderr
    ours = [line for line in result.stderr.strip().splitlines() if not line.startswith("[ERROR] [")]  # rcl's own
    assert len(ours) == 1, result.stderr
    assert not (tmp_path / "log").exists()  # nothing half-created


def test_the_policy_node_pauses_on_a_driver_fault_and_refuses_a_foreign_encoder(tmp_path):
    """NaN actor weights from the graph are refused and the node acts on; a reflex (the simulated arm pushed into
    its fixture) stops the arm: the policy logs and sends nothing until ~/recover; an encoder node with other
    weights makes it stop acting."""
    torch.manual_seed(0)
    model = MSDPConfig(stem_channels=8, width=WIDTH, decoder_width=32)
    own, foreign = (save_encoder(tmp_path / name / "encoder", MSDPModel(model)) for name in ("own", "foreign"))
    log = tmp_path / "transitions"
    sim = {"use_sim_time": True}
    driver = {"backend": "mujoco", "marker_rate": 0.0, "task.max_episode_steps": 40, "sim.reflex_force": 60.0}
    policy = {"transitions": str(log), "encoder_checkpoint": str(own), "task.max_episode_steps": 40,
              "settle_time": 0.2, "random_steps": 10**6, "agent.hidden": 32, **sim}  # fmt: skip
    logs = {name: tmp_path / f"{name}.log" for name in ("driver", "encoder", "foreign", "policy")}
    probe = Probe()
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    status, poses, actions = [], [], []
    probe.node.create_subscription(String, "/franka/status", lambda m: status.append(m.data), latched)
    probe.node.create_subscription(PoseStamped, "/franka/ee_pose", poses.append, qos_profile_sensor_data)
    probe.node.create_subscription(TwistStamped, "/msdp/action", actions.append, 10)
    targets = probe.node.create_publisher(PoseStamped, "/franka/equilibrium_pose", 1)
    recover = probe.node.create_client(Trigger, "/franka_driver/recover")
    try:
        with (
            node_process("msdp_franka_driver.driver_node", driver, logs["driver"]),
            node_process("msdp_policy.policy_node", policy, logs["policy"]),
        ):
            with node_process("msdp_perception.encoder_node", {"checkpoint": str(own), **sim}, logs["encoder"]):
                wait_for(probe, lambda: log_count(log) >= 5, 90, "the policy to act", logs["policy"])
                assert "set goal_file:=<file>" in logs["policy"].read_text()  # says where goals come from
                # NaN weights on the latched topic are refused; the node keeps acting with the weights it has
                actor = Actor(AgentConfig(hidden=32), WIDTH, 4)
                with torch.no_grad():
                    next(actor.parameters())[0, 0] = float("nan")
                weights = UInt8MultiArray(data=actor_to_bytes(actor))
                weights.layout.dim = [MultiArrayDimension(label="critic_updates=5 env_steps=50")]
                probe.node.create_publisher(UInt8MultiArray, "/msdp/actor_weights", latched).publish(weights)
                wait_for(probe, lambda: "actor_weights refused" in logs["policy"].read_text(), 20, "the refusal")
                logged = log_count(log)
                wait_for(probe, lambda: log_count(log) >= logged + 5, 30, "acting on", logs["policy"])
                while not (status and status[-1].startswith("fault: cartesian_reflex")):  # push into the fixture
                    pose = poses[-1]
                    pose.pose.position.z -= 0.05
                    targets.publish(pose)
                    probe.spin_for(0.02)
                wait_for(probe, lambda: "pausing" in logs["policy"].read_text(), 10, "the pause", logs["policy"])
                probe.spin_for(0.5)  # what was in flight arrives
                logged, acted = log_count(log), len(actions)
                probe.spin_for(3.0)
                assert (log_count(log), len(actions)) == (logged, acted), "the policy acted on a stopped arm"
                assert "episode aborted by the driver fault" in logs["policy"].read_text()
                assert recover.wait_for_service(timeout_sec=10)
                future = recover.call_async(Trigger.Request())
                assert probe.spin_until(future.done, 10) and future.result().success, future.result()
                wait_for(probe, lambda: status[-1] == "running" and log_count(log) > logged + 3, 60, "resuming")
            with node_process("msdp_perception.encoder_node", {"checkpoint": str(foreign), **sim}, logs["foreign"]):
                wait_for(probe, lambda: "not acting" in logs["policy"].read_text(), 30, "the refusal", logs["policy"])
                probe.spin_for(0.5)
                acted = len(actions)
                probe.spin_for(3.0)
                assert len(actions) == acted, "the policy acted on another encoder's embeddings"
        reader = TransitionReader(log)
        assert reader.schema.meta["encoder_checkpoint"] == str(own)
    finally:
        probe.close()


def test_on_a_real_cells_terms_the_policy_resets_itself_and_logs_the_operators_takeovers(tmp_path):
    """A fixed fixture, a taught goal file and motion resets (no simulator reset after the first); the policy
    (require_operator) waits for the operator; the scripted operator (teleop node, mode intervene) helps 0.5 s
    into every episode: its steps act with its actions, are flagged in the log and counted in the episode
    results on /msdp/episode."""
    torch.manual_seed(0)
    encoder = save_encoder(tmp_path / "encoder", MSDPModel(MSDPConfig(stem_channels=8, width=WIDTH, decoder_width=32)))
    goal = tmp_path / "goal.yaml"
    save_goal(Goal("peg", (0.5, 0.0, 0.02), 0.0), goal)
    log = tmp_path / "online" / "transitions"
    sim = {"use_sim_time": True}
    fixed = {"task.hole_xy_range": 0.0, "task.hole_yaw_range": 0.0, "task.max_episode_steps": 20}
    driver = {"backend": "mujoco", "marker_rate": 0.0, "real_time_factor": 2.0, **fixed}
    policy = {"transitions": str(log), "encoder_checkpoint": str(encoder), "goal_file": str(goal),
              "reset_kind": "motion", "reset.settle_time": 0.2, "max_episodes": 2, "agent.hidden": 32,
              "random_steps": 10**6, "require_operator": True, **fixed, **sim}  # fmt: skip
    operator = {"mode": "intervene", "operator_kind": "scripted", "goal_file": str(goal), "reset_kind": "driver",
                "operator.help_after": 0.5, "operator.takeover_time": 0.6, **fixed, **sim}  # fmt: skip
    logs = {name: tmp_path / f"{name}.log" for name in ("driver", "encoder", "policy", "operator")}
    probe = Probe()
    episodes, embeddings = [], []
    probe.node.create_subscription(String, "/msdp/episode", lambda m: episodes.append(json.loads(m.data)), 10)
    probe.node.create_subscription(Image, "/msdp/embedding", embeddings.append, 10)
    try:
        with (
            node_process("msdp_franka_driver.driver_node", driver, logs["driver"]),
            node_process("msdp_perception.encoder_node", {"checkpoint": str(encoder), **sim}, logs["encoder"]),
            node_process("msdp_policy.policy_node", policy, logs["policy"]) as node,
        ):
            waiting = lambda: "waiting for the operator" in logs["policy"].read_text() and len(embeddings) > 5  # noqa: E731
            wait_for(probe, waiting, 90, "the policy to wait for its operator", logs["policy"])
            probe.spin_for(2.0)
            assert not episodes and not log_count(log), "an episode started without the operator"
            with node_process("msdp_policy.teleop_node", operator, logs["operator"]):
                wait_for(probe, lambda: node.poll() is not None, 120, "two episodes", logs["policy"])
            assert node.returncode == 0, logs["policy"].read_text()[-3000:]
            probe.spin_for(0.5)
    finally:
        probe.close()
    ends = [e for e in episodes if e["kind"] == "end"]
    starts = [e["episode"] for e in episodes if e["kind"] == "start"]
    assert len(ends) == 2 and starts == [e["episode"] for e in ends], episodes
    assert all(e["interventions"] > 0 for e in ends), ends
    arrays = TransitionReader(log).arrays
    flagged = arrays["intervention"] & ~arrays["final"]
    assert 0 < flagged.sum() == sum(e["interventions"] for e in ends)
    for episode in np.unique(arrays["episode"]):  # one takeover per episode: 0.5 s in, for about 0.6 s (6 steps)
        steps = np.flatnonzero(flagged[arrays["episode"] == episode])
        assert steps.size and np.all(np.diff(steps) == 1) and steps[0] >= 3 and 4 <= steps.size <= 8, steps
    assert "reset" not in logs["driver"].read_text().split("franka driver up", 1)[1], "the driver was asked to reset"
