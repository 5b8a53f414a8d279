"""RLPD's offline data: recorded bags (such as the pretraining data) turned into a transition log.

Every synchronised sample of the bags is encoded with the frozen encoder; a sample followed by an action
becomes a step whose reward and success come from the task code (the tool pose after the action, from
/franka/ee_pose, against the episode's goal, from /msdp/task_goal -- ``msdp collect`` and the recorder write
both); a sample with no action after it ends its episode (a ``final`` record). A recording made with the
teleop node also holds each episode's result on /msdp/episode: the steps of an episode the operator aborted
are left out, and the last step of one the operator marked successful is a success (terminal, the success
reward) even where the pose test did not see it. The result has the same schema as a training run's log, so
``msdp train --rlpd --offline LOG`` and the learner node can mix it in.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from msdp import vocabulary as vocab
from msdp.vocabulary import stamp_nanoseconds
from msdp_franka_driver.pose import quat_yaw
from msdp_perception.bags import BagError, BagReader
from msdp_perception.checkpoint import load_encoder
from msdp_perception.dataset import BagDataset, find_bags
from msdp_policy.episodes import POSE_MATCH_NS, EpisodeResult, is_episode_start
from msdp_policy.replay import embedding_record, final_record, log_meta, step_record, transition_schema
from msdp_policy.tasks import TaskConfig, action_spec, make_task
from msdp_policy.transition_log import TransitionWriter

POSE_TOPIC, GOAL_TOPIC, EPISODE_TOPIC = vocab.EE_POSE.name, vocab.TASK_GOAL.name, vocab.EPISODE.name


def _pose_array(msg) -> np.ndarray:
    return np.concatenate(vocab.pose_arrays(msg))


def check_reward_topics(bag: Path, topics: dict[str, str]) -> None:
    missing = [t for t in (POSE_TOPIC, GOAL_TOPIC) if t not in topics]
    if missing:
        raise BagError(
            f"bag {bag} lacks {', '.join(missing)}: offline rewards need the tool pose and the episode goal "
            "(record them, or collect with `msdp collect`, which writes both)"
        )


def poses_and_goals(bag: Path, stamps_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the tool pose at the sample's time -- the nearest, at most ``POSE_MATCH_NS`` away, as the
    teleop node scores -- (N, 7), and the latest goal at or before it (N, 7); NaN where there is none."""
    with BagReader(bag) as reader:
        check_reward_topics(bag, reader.topics)
        found: dict[str, list[tuple[int, np.ndarray]]] = {POSE_TOPIC: [], GOAL_TOPIC: []}
        for topic, _, _, msg in reader.messages([POSE_TOPIC, GOAL_TOPIC]):
            found[topic].append((stamp_nanoseconds(msg.header), _pose_array(msg)))
    out = []
    for topic in (POSE_TOPIC, GOAL_TOPIC):
        readings = sorted(found[topic], key=lambda r: r[0])
        times = np.array([t for t, _ in readings], np.int64)
        values = np.array([v for _, v in readings]).reshape(-1, 7)
        index = np.searchsorted(times, stamps_ns, side="right") - 1  # the latest at or before
        if topic == POSE_TOPIC and len(times):  # the nearest, either side
            after = np.minimum(index + 1, len(times) - 1)
            later_is_nearer = (index < 0) | (
                np.abs(times[after] - stamps_ns) < np.abs(stamps_ns - times[np.maximum(index, 0)])
            )
            index = np.where(later_is_nearer, after, index)
        valid = index >= 0
        if topic == POSE_TOPIC:
            valid &= np.abs(stamps_ns - times[np.maximum(index, 0)]) <= POSE_MATCH_NS
        result = np.full((len(stamps_ns), 7), np.nan)
        result[valid] = values[index[valid]]
        out.append(result)
    return out[0], out[1]


def operator_labels(bag: Path, stamps_ns: np.ndarray, next_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: left out (in an episode the operator aborted), and marked successful (the last step of an
    episode the operator ended with success), from the episode starts and results on /msdp/episode."""
    aborted, marked = np.zeros(len(stamps_ns), bool), np.zeros(len(stamps_ns), bool)
    with BagReader(bag) as reader:
        if EPISODE_TOPIC not in reader.topics:
            return aborted, marked
        texts = [msg.data for _, _, _, msg in reader.messages([EPISODE_TOPIC])]
    started = None
    for text in texts:
        if is_episode_start(text):
            started = json.loads(text)["time"]
            continue
        try:
            result = EpisodeResult.from_json(text)
        except ValueError as exc:
            raise BagError(f"bag {bag}: {EPISODE_TOPIC}: {exc}") from exc
        if started is None:
            continue  # the recording began inside this episode: its start is unknown
        inside = (stamps_ns >= round(started * 1e9)) & (stamps_ns <= round(result.time * 1e9))
        if result.ended_by == "abort":
            aborted |= inside
        elif result.success and result.source != "policy":
            steps = np.flatnonzero(inside & (next_index >= 0))
            marked[steps[-1:]] = True
        started = None
    return aborted, marked


def offline_log_from_bags(
    bags: list[Path], encoder_checkpoint: Path, out: Path, task: TaskConfig, progress: bool = True
) -> dict[str, int]:
    """Write the log; returns counts of steps, episodes and successes."""
    bags = find_bags(bags)
    for bag in bags:  # before anything is written: a failed run leaves no log behind
        with BagReader(bag) as reader:
            check_reward_topics(bag, reader.topics)
    model, _ = load_encoder(encoder_checkpoint)
    model.eval()
    task_code = make_task(task)
    spec = action_spec(task)
    meta = log_meta(encoder_checkpoint, model.config, spec)
    schema = transition_schema("msdp_frozen", model.config, task_code.action_dim, meta)
    if (out / "transitions.log").exists():
        raise FileExistsError(f"{out} already holds a transition log; choose a new folder")
    counts = {"steps": 0, "episodes": 0, "successes": 0}
    with TransitionWriter(out, schema, durable=False) as writer:
        for episode_base, bag in enumerate(bags):
            data = BagDataset([bag], spec=model.config.observation_spec, progress=progress)
            stamps_ns = np.round(data.stamps * 1e9).astype(np.int64)
            poses, goals = poses_and_goals(bag, stamps_ns)
            aborted, marked = operator_labels(bag, stamps_ns, data.next_index)
            embeddings = _encode(model, data, progress)
            episode = episode_base * 10**9  # ids unique across bags
            for i in range(len(data)):
                if aborted[i]:
                    episode += int(i == 0 or not aborted[i - 1])  # nothing links across the left-out stretch
                    continue
                fields = {name: values[i] for name, values in embeddings.items()}
                following = data.next_index[i]
                if following < 0:
                    writer.append(final_record(fields, episode, task_code.action_dim, terminal=False))
                    counts["episodes"] += int(i > 0 and data.next_index[i - 1] == i)  # it closed some steps
                    episode += 1
                    continue
                if np.isnan(poses[following]).any() or np.isnan(goals[i]).any():
                    raise BagError(f"bag {bag}: no tool pose or goal for the sample at {data.stamps[i]:.3f} s")
                goal = goals[i]
                goal_state = task_code.state_from_goal(goal[:3], quat_yaw(goal[3:]))
                score = task_code.score_state(poses[following, :3], poses[following, 3:], goal_state)
                success = score.success or marked[i]
                reward = task_code.reward(score.reward, True) if marked[i] and not score.success else score.reward
                action = spec.normalised(data.actions[i][:3], data.actions[i][3])
                writer.append(step_record(fields, episode, action, reward, success))
                counts["steps"] += 1
                counts["successes"] += int(success)
    return counts


@torch.no_grad()
def _encode(model, data: BagDataset, progress: bool, batch: int = 256) -> dict[str, np.ndarray]:
    parts: list[dict[str, np.ndarray]] = []
    for start in tqdm(range(0, len(data), batch), desc="encode", unit="batch", disable=not progress):
        end = start + batch
        out = model.embed(
            torch.from_numpy(data.images[start:end]),
            torch.from_numpy(data.wrench[start:end]),
            torch.from_numpy(data.proprio[start:end]),
            torch.from_numpy(data.present[start:end]),
        )
        parts.append(embedding_record(out.tokens.numpy(), out.token_present.numpy(), out.pooled.numpy()))
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
