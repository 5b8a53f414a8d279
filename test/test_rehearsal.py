"""``msdp rehearse --short``: every phase of the real-robot protocol runs on the simulated cell over ROS and hands
the right artefacts to the next (a taught goal, recorded demonstrations with their results, play, an encoder,
an offline log made by that encoder, an online log and the learner's checkpoints, an evaluation, a report)."""

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from msdp_perception.bags import BagReader
from msdp_perception.checkpoint import encoder_identity
from msdp_policy.episodes import EpisodeResult, load_goal
from msdp_policy.rehearsal import PHASES, log_statistics
from msdp_policy.transition_log import TransitionReader
from ros_harness import free_port, run_in_own_group


def rehearse(out, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    ports = ["--set", f"camera_port={free_port()}", "--set", f"ft_port={free_port(socket.SOCK_DGRAM)}",
             "--set", f"ft_http_port={free_port()}"]  # fmt: skip
    command = [sys.executable, "-m", "msdp.cli", "rehearse", "--short", "--out", str(out), *ports, *extra]
    return run_in_own_group(command, timeout)


def episode_results(bag) -> list[EpisodeResult]:
    with BagReader(bag) as reader:
        texts = [msg.data for _, _, _, msg in reader.messages(["/msdp/episode"])]
    return [EpisodeResult.from_json(t) for t in texts if json.loads(t)["kind"] == "end"]


@pytest.mark.slow  # make test-slow (75 s): the whole protocol; its nodes and their parts run in make test
def test_a_short_rehearsal_hands_every_phase_its_artefacts_and_resumes_as_finished(tmp_path):
    out = tmp_path / "rehearsal"
    result = rehearse(out)
    assert result.returncode == 0, result.stdout[-6000:]
    report = json.loads((out / "report.json").read_text())
    assert [p["name"] for p in report["phases"]] == list(PHASES)

    # teach: the scripted operator drove the peg home; the goal is the hole's floor, where the fixture stands
    goal = load_goal(out / "goal.yaml", "peg")
    assert np.allclose(goal.position, [0.5, 0.0, 0.02], atol=0.004) and abs(goal.yaw) < 0.05

    # demonstrations and play: bags with episode results; the demonstrations succeed, play is random
    demos, play = episode_results(out / "bags" / "demos"), episode_results(out / "bags" / "play")
    assert len(demos) == 1 and all(r.success and r.source == "scripted" for r in demos)
    assert len(play) == 1 and all(r.source == "random" and r.ended_by == "timeout" for r in play)

    # the offline logs, one per recording: made by the pretrained encoder, the demonstrations' holding their successes
    encoder = out / "pretrain" / "encoder.safetensors"
    offline = TransitionReader(out / "offline" / "demos")
    assert offline.schema.meta["encoder"] == TransitionReader(out / "offline" / "play").schema.meta["encoder"]
    assert offline.schema.meta["encoder"] == encoder_identity(encoder)
    assert log_statistics(out / "offline" / "demos")["successes"] >= 1

    # learning: the policy logged the interactions on the same encoder; the learner left its checkpoints
    online = TransitionReader(out / "online" / "transitions")
    assert online.schema.meta["encoder"] == offline.schema.meta["encoder"]
    assert report["online"]["steps"] >= 60 and report["online"]["episodes"] >= 3
    policy = json.loads((out / "online" / "policy.json").read_text())
    assert policy["encoder_checkpoint"] == str(encoder) and policy["training"]["critic_updates"] > 0
    assert (out / "online" / "agent.pt").is_file()
    assert report["learner"]["critic_updates"] > 0 and report["episode_overhead_s"] > 0  # how it kept up, resets

    # evaluation: the learned policy, mean action, one episode; the report says it all
    assert report["evaluation"]["episodes"] == 1
    text = (out / "report.md").read_text()
    assert all(f"| {name} |" in text for name in PHASES) and "msdp teach-goal" in text

    started = time.monotonic()
    again = rehearse(out, "--resume")
    assert again.returncode == 0, again.stdout[-3000:]
    assert again.stdout.count("skipped") == len(PHASES) and time.monotonic() - started < 60
    refused = rehearse(out)
    assert refused.returncode == 2 and "already exists; continue it with --resume" in refused.stdout
