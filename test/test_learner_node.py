"""The learner node's record of progress over DDS: a learner process on a small log, fed episode results on
/msdp/episode by a probe, leaves metrics.csv, episodes.csv, curves.png and TensorBoard events in its folder."""

import json
import time

import numpy as np
import pytest
from std_msgs.msg import String

from msdp import vocabulary as vocab
from msdp.metrics import read_rows
from msdp.node import QOS
from msdp.specs import ActionSpec
from msdp_perception.checkpoint import save_encoder
from msdp_perception.model import MSDPConfig, MSDPModel
from msdp_policy.episodes import EpisodeResult, episode_start_json
from msdp_policy.progress import COLUMNS, EPISODE_TEXT
from msdp_policy.replay import embedding_record, final_record, log_meta, step_record, transition_schema
from msdp_policy.transition_log import TransitionWriter
from ros_harness import Probe, node_process

pytestmark = pytest.mark.ros

MODEL = MSDPConfig(stem_channels=8, width=16, decoder_width=16)


def write_token_log(folder, episodes: int, steps: int, meta: dict | None = None) -> None:
    """A frozen-encoder log of ``episodes`` episodes of ``steps`` steps, the middle step of each the operator's."""
    rng = np.random.default_rng(0)
    with TransitionWriter(folder, transition_schema("msdp_frozen", MODEL, 4, meta), durable=False) as writer:
        for episode in range(episodes):
            for step in range(steps + 1):
                tokens = rng.normal(size=(MODEL.n_tokens, MODEL.width)).astype(np.float32)
                observation = embedding_record(tokens, np.ones(MODEL.n_tokens, bool), tokens[0])
                if step < steps:
                    action = rng.uniform(-1, 1, 4)
                    writer.append(step_record(observation, episode, action, -1.0, False, step == steps // 2))
                else:
                    writer.append(final_record(observation, episode, 4, False))


def wait_for(probe: Probe, condition, timeout: float, what: str, log) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what}\n--- {log}:\n{log.read_text()[-3000:]}"
            )
        probe.spin_for(0.1)


def test_the_learner_node_records_its_updates_and_the_episode_results_it_hears(tmp_path):
    encoder = save_encoder(tmp_path / "encoder", MSDPModel(MODEL))  # the log names it: policy.json will too
    write_token_log(tmp_path / "transitions", episodes=3, steps=10, meta=log_meta(encoder, MODEL, ActionSpec()))
    out, log = tmp_path / "online", tmp_path / "learner.log"
    params = {
        "transitions": str(tmp_path / "transitions"), "out": str(out), "update_after": 1, "metrics_every": 20,
        "checkpoint_every": 1000, "agent.hidden": 16, "agent.batch_size": 8, "agent.critic_updates_per_step": 2,
    }  # fmt: skip
    results = [
        EpisodeResult(0, True, "success", 10, -4.0, interventions=2, actor="critic_updates=20"),
        EpisodeResult(1, False, "timeout", 30, -12.0),
        EpisodeResult(2, True, "success", 20, -5.0, interventions=1),
    ]
    messages = [episode_start_json(0, "policy", 0.0), results[0].to_json(), "{not json", results[1].to_json(),
                results[2].to_json()]  # fmt: skip
    probe = Probe()
    publisher = probe.node.create_publisher(String, vocab.EPISODE.name, QOS[vocab.EPISODE.qos])
    try:
        with node_process("msdp_policy.learner_node", params, log):
            wait_for(probe, lambda: publisher.get_subscription_count() > 0, 15, "the learner's subscription", log)
            for text in messages:
                publisher.publish(String(data=text))
            episodes_csv = out / "episodes.csv"
            three = lambda: episodes_csv.exists() and len(read_rows(episodes_csv, text=EPISODE_TEXT)) == 3  # noqa: E731
            wait_for(probe, three, 10, "3 episodes in episodes.csv", log)
            # 30 logged steps owe 2 x 30 updates: rows at 20, 40 and 60 critic updates
            wait_for(probe, lambda: "60 critic updates" in log.read_text(), 15, "a metrics row at 60 updates", log)
    finally:
        probe.close()
    rows = read_rows(out / "metrics.csv", COLUMNS)
    assert [row["critic_updates"] for row in rows][:3] == [20, 40, 60] and rows[-1]["critic_updates"] == 60
    assert all(row["env_steps"] == 30 and np.isfinite(row["critic_loss"]) for row in rows[:3])
    last = rows[-1]  # the row at the end has every episode (unless the row at 60 came after them)
    assert sum(row["new_episodes"] for row in rows) == 3 and last["episodes"] == 3
    assert last["window_success_rate"] == pytest.approx(2 / 3) and last["window_return"] == pytest.approx(-7.0)
    assert last["window_intervention_rate"] == pytest.approx(3 / 60)
    episodes = read_rows(out / "episodes.csv", text=EPISODE_TEXT)
    assert [(e["episode"], e["success"], e["ended_by"], e["interventions"]) for e in episodes] == [
        (0, 1, "success", 2), (1, 0, "timeout", 0), (2, 1, "success", 1)]  # fmt: skip
    assert (out / "curves.png").exists() and list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((out / "policy.json").read_text())["encoder_checkpoint"] == str(encoder)
    text = log.read_text()
    assert text.count("/msdp/episode: not an episode result") == 1 and "kind': 'start" not in text, text[-3000:]


def test_the_learner_node_refuses_a_log_that_names_no_encoder_when_given_none(tmp_path):
    """Its first checkpoint would fail (the saved policy names its encoder): it says so at the start instead."""
    write_token_log(tmp_path / "transitions", episodes=1, steps=3)  # a log from before meta
    params = {"transitions": str(tmp_path / "transitions"), "out": str(tmp_path / "online")}
    with node_process("msdp_policy.learner_node", params, tmp_path / "learner.log") as process:
        assert process.wait(timeout=20) == 2
    text = (tmp_path / "learner.log").read_text()
    assert "parameter 'encoder_checkpoint' is needed:" in text and "does not name its encoder" in text, text
