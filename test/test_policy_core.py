"""The policy core without ROS: replay linking, the learner's ratio and resume, weight transfer, online episodes,
interventions in RLPD, the online learner's record of progress."""

import numpy as np
import pytest
import torch

from msdp.metrics import MetricsError, read_rows
from msdp_perception.encoder import EncodedObservation, pack_embedding
from msdp_perception.model import MSDPConfig
from msdp_policy.agent import Actor, AgentConfig, SACAgent
from msdp_policy.episodes import EpisodeResult, episode_start_json
from msdp_policy.learner import Learner, actor_from_bytes, actor_to_bytes
from msdp_policy.online import BadInput, OnlineEpisodes
from msdp_policy.progress import COLUMNS, EPISODE_TEXT, ProgressLog, episode_end
from msdp_policy.replay import Replay, to_bfloat16_bits, transition_schema
from msdp_policy.tasks import HOLE_DEPTH, PegInsertion, TaskConfig
from msdp_policy.transition_log import Schema, TransitionReader, TransitionWriter

MODEL = MSDPConfig(width=8)
N = MODEL.n_tokens
SCHEMA = transition_schema("msdp_frozen", MODEL, 4)
BOX = ((0.25, -0.35, 0.01), (0.75, 0.35, 0.65))


def record(episode: int, index: int, final: bool = False, reward: float = 0.0) -> dict[str, np.ndarray]:
    tokens = np.full((N, MODEL.width), float(index), np.float32)  # a record's tokens say which record it is
    return {
        "tokens": to_bfloat16_bits(tokens), "present": np.ones(N, bool), "pooled": tokens[0],
        "episode": np.int64(episode), "action": np.full(4, 0.1 * index, np.float32), "reward": np.float32(reward),
        "terminal": np.bool_(False), "final": np.bool_(final),
    }  # fmt: skip


def write_log(folder, episodes: list[tuple[int, int, bool]], reward: float = 0.0) -> None:
    """(episode id, steps, ends with a final record) per episode, in order."""
    index = 0
    with TransitionWriter(folder, SCHEMA, durable=False) as writer:
        for episode, steps, closed in episodes:
            for _ in range(steps):
                writer.append(record(episode, index, reward=reward))
                index += 1
            if closed:
                writer.append(record(episode, index, final=True, reward=reward))
                index += 1


def test_replay_links_each_step_to_the_next_record_of_its_own_episode(tmp_path):
    # episode 7: 3 steps + final; episode 8: killed after 2 steps (no final); episode 9: 2 steps + final
    write_log(tmp_path, [(7, 3, True), (8, 2, False), (9, 2, True)])
    replay = Replay(TransitionReader(tmp_path))
    assert len(replay) == 3 + 1 + 2  # episode 8's last step has no next observation; finals are never sampled
    batch = replay.sample(512, np.random.default_rng(0))
    index = batch["tokens"].float()[:, 0, 0]
    assert set(index.long().tolist()) == {0, 1, 2, 4, 6, 7}  # records 3 and 8 are finals
    torch.testing.assert_close(batch["next_tokens"].float()[:, 0, 0], index + 1)
    torch.testing.assert_close(batch["action"][:, 0], 0.1 * index)
    # a record appended later is picked up by refresh, and links the previously open step
    with TransitionWriter(tmp_path, SCHEMA, durable=False) as writer:
        writer.append(record(10, 10))
        writer.append(record(10, 11, final=True))
    assert replay.refresh() == 2 and len(replay) == 7


def test_bfloat16_tokens_keep_about_three_significant_digits():
    values = np.random.default_rng(0).normal(size=(66, 128)).astype(np.float32)
    back = torch.from_numpy(to_bfloat16_bits(values)).view(torch.bfloat16).float().numpy()
    np.testing.assert_allclose(back, values, rtol=2**-8, atol=1e-30)


def agent(rlpd: bool = False) -> SACAgent:
    torch.manual_seed(0)
    return SACAgent(AgentConfig(hidden=16, batch_size=8, rlpd=rlpd), MODEL.width, N, 4)


def test_learner_keeps_the_update_to_data_ratio_and_resumes_from_its_checkpoint(tmp_path):
    write_log(tmp_path / "log", [(1, 30, True)])
    learner = Learner(agent(), Replay(TransitionReader(tmp_path / "log")), [], update_after=10, seed=0)
    assert learner.env_steps() == 30 and learner.updates_owed(9) == 0
    metrics = learner.catch_up(30)
    assert learner.agent.critic_updates == 2 * (30 - 10 + 1) and np.isfinite(metrics["critic_loss"])
    assert learner.catch_up(30) == {}  # nothing owed
    learner.save(tmp_path / "agent.pt", {"env_steps": 30})

    other = Learner(agent(), Replay(TransitionReader(tmp_path / "log")), [], update_after=10, seed=0)
    assert other.resume(tmp_path / "agent.pt")["env_steps"] == 30
    assert other.agent.critic_updates == learner.agent.critic_updates
    for key, value in learner.agent.state_dict().items():
        torch.testing.assert_close(other.agent.state_dict()[key], value)
    assert other.updates_owed(31) == 2


def test_rlpd_draws_half_of_every_batch_from_the_offline_log(tmp_path):
    write_log(tmp_path / "online", [(1, 20, True)], reward=0.0)
    write_log(tmp_path / "offline", [(2, 20, True)], reward=1.0)
    online, offline = Replay(TransitionReader(tmp_path / "online")), Replay(TransitionReader(tmp_path / "offline"))
    learner = Learner(agent(rlpd=True), online, [offline], update_after=1, seed=0)
    batch = learner.sample()
    assert batch["reward"].tolist() == [0.0] * 4 + [1.0] * 4
    assert learner.agent.critic.q.layer_norm  # RLPD's layer-normalised critic
    with pytest.raises(ValueError, match="offline"):
        Learner(agent(rlpd=True), online, [], update_after=1, seed=0)


def test_actor_weights_travel_as_bytes_and_bad_blobs_are_refused():
    torch.manual_seed(0)
    source, target = Actor(AgentConfig(hidden=16), 8, 4), Actor(AgentConfig(hidden=16), 8, 4)
    copy = actor_from_bytes(actor_to_bytes(source), target)
    x = torch.randn(5, 8)
    torch.testing.assert_close(copy(x), source(x))
    assert not torch.allclose(target(x)[0], source(x)[0])  # the old actor is left as it was
    with pytest.raises(ValueError, match="safetensors"):
        actor_from_bytes(b"not weights", target)
    with pytest.raises(ValueError, match="do not fit"):
        actor_from_bytes(actor_to_bytes(Actor(AgentConfig(hidden=32), 8, 4)), target)


def embedding_rows(value: float) -> np.ndarray:
    tokens = np.full((N, MODEL.width), value, np.float32)
    present = np.ones(N, bool)
    present[-2] = False  # F/T masked: a NaN row on the wire, a zero row with present False in the log
    return pack_embedding(EncodedObservation(tokens, present, tokens[0]))


def test_online_episodes_score_log_and_end_like_the_fast_loop(tmp_path):
    task = TaskConfig(max_episode_steps=3)
    goal = {"hole_position": np.array([0.5, 0.0, 0.02]), "hole_yaw": np.array(0.0)}
    down = np.array([1.0, 0.0, 0.0, 0.0])
    writer = TransitionWriter(tmp_path, SCHEMA, durable=False)
    episodes = OnlineEpisodes(task, BOX, writer, Actor(AgentConfig(hidden=16), MODEL.width, 4), seed=0)
    episodes.start_episode(goal)
    above = np.array([0.5, 0.0, 0.15])
    first = episodes.step(embedding_rows(0.0), above, down)
    assert first.reward is None and writer.count == 0
    position, orientation = first.target
    assert np.all(np.abs(position - above) <= task.max_step + 1e-9) and np.isclose(np.linalg.norm(orientation), 1)
    # near the box's edge the target is clipped into the box
    edge = episodes.step(embedding_rows(1.0), np.array([0.749, 0.349, 0.64]), down)
    assert np.all(edge.target[0] <= np.array(BOX[1]))
    assert edge.reward == pytest.approx(PegInsertion().score_state(np.array([0.749, 0.349, 0.64]), down, goal).reward)
    last = episodes.step(embedding_rows(2.0), above, down)
    end = episodes.step(embedding_rows(3.0), above, down)  # the third step's outcome: the step limit
    assert end.result.ended_by == "timeout" and not end.result.success and end.target is None and not episodes.running
    writer.close()
    logged = TransitionReader(tmp_path).arrays
    assert logged["final"].tolist() == [False, False, False, True] and not logged["terminal"].any()
    assert logged["present"][:, -2].sum() == 0 and np.all(logged["present"][:, :-2])
    assert last.reward is not None and logged["reward"][1] == pytest.approx(last.reward)

    # a peg inside the hole ends the episode at once, as a success and a terminal step
    writer = TransitionWriter(tmp_path / "success", SCHEMA, durable=False)
    episodes = OnlineEpisodes(task, BOX, writer, None, seed=0)
    episodes.start_episode(goal)
    episodes.step(embedding_rows(0.0), above, down)
    inside = np.array([0.5, 0.0, 0.02 + HOLE_DEPTH - 0.03])
    done = episodes.step(embedding_rows(1.0), inside, down)
    assert done.result.ended_by == "success" and done.result.success and episodes.successes == 1
    writer.close()
    assert TransitionReader(tmp_path / "success").arrays["terminal"].tolist() == [True, True]


def test_online_episodes_refuse_non_finite_poses_goals_and_embeddings(tmp_path):
    """A NaN pose would score NaN rewards into the log (and a NaN critic); it is refused and nothing is logged."""
    goal = {"hole_position": np.array([0.5, 0.0, 0.02]), "hole_yaw": np.array(0.0)}
    down, above = np.array([1.0, 0.0, 0.0, 0.0]), np.array([0.5, 0.0, 0.15])
    writer = TransitionWriter(tmp_path, SCHEMA, durable=False)
    episodes = OnlineEpisodes(TaskConfig(max_episode_steps=5), BOX, writer, None, seed=0)
    with pytest.raises(BadInput, match="non-finite goal"):
        episodes.start_episode({**goal, "hole_yaw": np.array(np.nan)})
    episodes.start_episode(goal)
    episodes.step(embedding_rows(0.0), above, down)
    with pytest.raises(BadInput, match="non-finite end-effector pose"):
        episodes.step(embedding_rows(1.0), np.array([0.5, np.nan, 0.15]), down)
    nan_pooled = embedding_rows(1.0)
    nan_pooled[-1, 0] = np.nan
    with pytest.raises(BadInput, match="non-finite pooled"):
        episodes.step(nan_pooled, above, down)
    assert writer.count == 0
    second = episodes.step(embedding_rows(2.0), above, down)  # the episode goes on from the last good step
    assert writer.count == 1 and np.isfinite(second.reward)
    writer.close()


def test_sparse_reward_and_success_thresholds_follow_the_task_config():
    goal = {"hole_position": np.array([0.5, 0.0, 0.02]), "hole_yaw": np.array(0.0)}
    down = np.array([1.0, 0.0, 0.0, 0.0])
    top = 0.02 + HOLE_DEPTH
    inside = np.array([0.5, 0.008, top - 0.03])  # 30 mm deep, 8 mm off the axis
    above = np.array([0.5, 0.0, top + 0.05])
    shaped, sparse = PegInsertion(), PegInsertion(TaskConfig(reward="sparse"))
    assert shaped.score_state(inside, down, goal).success and shaped.score_state(above, down, goal).reward < -0.05
    assert sparse.score_state(inside, down, goal).reward == 1.0
    assert sparse.score_state(above, down, goal).reward == 0.0
    assert not PegInsertion(TaskConfig(success_depth=0.035)).score_state(inside, down, goal).success
    assert not PegInsertion(TaskConfig(success_lateral=0.005)).score_state(inside, down, goal).success


def test_replay_indexes_the_linked_intervention_steps(tmp_path):
    # episode 1: steps 0-4 (2 and 3 the operator's) + final 5; episode 2: step 6 the operator's, killed (unlinked)
    with TransitionWriter(tmp_path, SCHEMA, durable=False) as writer:
        for index in range(7):
            flag = np.bool_(index in (2, 3, 6))
            writer.append({**record(1 if index < 6 else 2, index, final=index == 5), "intervention": flag})
    replay = Replay(TransitionReader(tmp_path))
    assert len(replay) == 5 and replay.interventions == 2  # step 6 has no next observation
    batch = replay.sample_interventions(64, np.random.default_rng(0))
    index = batch["tokens"].float()[:, 0, 0]
    assert set(index.long().tolist()) == {2, 3}
    torch.testing.assert_close(batch["next_tokens"].float()[:, 0, 0], index + 1)
    with TransitionWriter(tmp_path, SCHEMA, durable=False) as writer:
        writer.append({**record(2, 7), "intervention": np.bool_(True)})  # links step 6
    replay.refresh()
    assert replay.interventions == 3
    write_log(tmp_path / "plain", [(1, 3, True)])
    with pytest.raises(RuntimeError, match="no complete intervention"):
        Replay(TransitionReader(tmp_path / "plain")).sample_interventions(1, np.random.default_rng(0))


def test_rlpd_draws_the_offline_half_from_the_online_interventions_as_from_one_more_offline_log(tmp_path):
    write_log(tmp_path / "offline", [(9, 20, True)], reward=1.0)
    with TransitionWriter(tmp_path / "online", SCHEMA, durable=False) as writer:
        for index in range(21):  # steps 5-7 the operator's
            flag = np.bool_(5 <= index <= 7)
            writer.append({**record(1, index, final=index == 20), "intervention": flag})
    online, offline = Replay(TransitionReader(tmp_path / "online")), Replay(TransitionReader(tmp_path / "offline"))
    learner = Learner(agent(rlpd=True), online, [offline], update_after=1, seed=0)
    sources = []
    for _ in range(200):
        batch = learner.sample()
        half = batch["tokens"].float()[4:, 0, 0].long().tolist()
        if batch["reward"][4:].eq(1.0).all():
            sources.append("offline")
        else:
            assert set(half) <= {5, 6, 7} and batch["reward"][4:].eq(0.0).all(), half
            sources.append("interventions")
        assert batch["reward"][:4].eq(0.0).all()  # the online half: the whole online log
    assert 70 < sources.count("interventions") < 130  # one source per batch, drawn uniformly


# What Learner.sample drew with seed 3 before interventions existed: (reward, record) for 4 RLPD batches.
DRAWS_BEFORE_INTERVENTIONS = [
    [(0, 1), (0, 3), (0, 4), (0, 3), (2, 9), (2, 9), (2, 6), (2, 0)],
    [(0, 5), (0, 7), (0, 10), (0, 8), (1, 2), (1, 1), (1, 6), (1, 6)],
    [(0, 1), (0, 7), (0, 6), (0, 16), (1, 4), (1, 3), (1, 3), (1, 5)],
    [(0, 2), (0, 13), (0, 13), (0, 17), (2, 8), (2, 2), (2, 3), (2, 7)],
]


@pytest.mark.parametrize("old_layout", [False, True], ids=["flag_all_false", "log_from_before_the_flag"])
def test_without_interventions_rlpd_draws_exactly_as_before(tmp_path, old_layout):
    schema = Schema({k: v for k, v in SCHEMA.fields.items() if k != "intervention"}) if old_layout else SCHEMA
    for name, episodes, reward in (("online", [(1, 12, True), (2, 6, False)], 0.0), ("a", [(3, 9, True)], 1.0),
                                   ("b", [(4, 5, True), (5, 5, True)], 2.0)):  # fmt: skip
        with TransitionWriter(tmp_path / name, schema, durable=False) as writer:
            index = 0
            for episode, steps, closed in episodes:
                for final in [False] * steps + [True] * closed:
                    writer.append(record(episode, index, final, reward))  # no flag: False in the new layout
                    index += 1
    online, *offline = (Replay(TransitionReader(tmp_path / name)) for name in ("online", "a", "b"))
    learner = Learner(agent(rlpd=True), online, offline, update_after=1, seed=3)
    for expected in DRAWS_BEFORE_INTERVENTIONS:
        batch = learner.sample()
        records = batch["tokens"].float()[:, 0, 0].long().tolist()
        drawn = list(zip(batch["reward"].long().tolist(), records, strict=True))
        assert drawn == expected


def test_catch_up_returns_each_metrics_mean_over_the_updates_that_made_it(tmp_path):
    write_log(tmp_path / "log", [(1, 30, True)])

    def make() -> Learner:
        torch.manual_seed(0)
        config = AgentConfig(hidden=16, batch_size=8, critic_updates_per_actor_update=2)
        return Learner(SACAgent(config, MODEL.width, N, 4), Replay(TransitionReader(tmp_path / "log")), [], 1, 0)

    learner, by_hand = make(), make()
    torch.manual_seed(1)  # the same draws of the actor's noise for both
    means = learner.catch_up(30, max_updates=5)
    torch.manual_seed(1)
    updates = [by_hand.agent.update(by_hand.sample()) for _ in range(5)]
    for name in ("critic_loss", "q"):
        assert means[name] == pytest.approx(np.mean([float(u[name]) for u in updates]), rel=1e-5)
    actor = [float(u["actor_loss"]) for u in updates if "actor_loss" in u]
    assert len(actor) == 2 and means["actor_loss"] == pytest.approx(np.mean(actor), rel=1e-5)
    assert set(means) == {"critic_loss", "q", "actor_loss", "temperature", "entropy"}


def episode_result(number: int, success: bool, steps: int, interventions: int = 0) -> EpisodeResult:
    ended_by = "success" if success else "timeout"
    return EpisodeResult(number, success, ended_by, steps, float(-steps), interventions, actor="critic_updates=5")


def test_progress_log_rows_episode_figures_rolling_window_curves_and_tensorboard(tmp_path):
    now = [100.0]
    progress = ProgressLog(tmp_path, window=3, clock=lambda: now[0])
    progress.add_updates(10, {"critic_loss": 1.0, "q": 5.0})
    progress.add_updates(30, {"critic_loss": 3.0, "q": 7.0, "actor_loss": -2.0, "temperature": 0.1, "entropy": 1.5})
    progress.add_episode(episode_result(0, True, 10, interventions=5))
    progress.add_episode(episode_result(1, False, 30))
    now[0] += 8.0
    row = progress.row(env_steps=400, critic_updates=540)
    assert row["critic_loss"] == pytest.approx(2.5) and row["q"] == pytest.approx(6.5)  # weighted by updates
    assert row["actor_loss"] == -2.0 and row["updates_per_s"] == pytest.approx(40 / 8.0)
    assert (row["wall_s"], row["env_steps"], row["critic_updates"], row["episodes"]) == (8.0, 400, 540, 2)
    assert row["success_rate"] == 0.5 and row["return"] == -20.0 and row["episode_length"] == 20.0
    assert row["intervention_rate"] == pytest.approx(5 / 40)  # operator steps over all steps
    for number in (2, 3):
        progress.add_episode(episode_result(number, True, 20, interventions=2))
    now[0] += 2.0
    row = progress.row(env_steps=500, critic_updates=540)
    assert np.isnan(row["critic_loss"]) and row["updates_per_s"] == 0.0  # no updates since the last row
    assert row["new_episodes"] == 2 and row["success_rate"] == 1.0 and row["intervention_rate"] == 0.1
    assert row["window_success_rate"] == pytest.approx(2 / 3)  # episodes 1, 2, 3
    assert row["window_intervention_rate"] == pytest.approx(4 / 70)
    assert row["window_episode_length"] == pytest.approx(70 / 3)
    progress.close()
    assert [r["env_steps"] for r in read_rows(tmp_path / "metrics.csv", COLUMNS)] == [400, 500]
    episodes = read_rows(tmp_path / "episodes.csv", ["episode", "success", "interventions"], EPISODE_TEXT)
    assert [(e["episode"], e["success"], e["ended_by"], e["actor"]) for e in episodes][:2] == [
        (0, 1, "success", "critic_updates=5"), (1, 0, "timeout", "critic_updates=5")]  # fmt: skip
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100

    # a learner restarted on the folder goes on: rows, window and wall time
    again = ProgressLog(tmp_path, window=3, clock=lambda: 0.0)
    again.add_episode(episode_result(4, False, 10))
    row = again.row(env_steps=600, critic_updates=600)
    assert row["wall_s"] == 10.0 and row["episodes"] == 5 and row["window_success_rate"] == pytest.approx(2 / 3)
    again.close()
    assert len(read_rows(tmp_path / "metrics.csv")) == 3


def test_progress_log_reads_only_episode_ends_and_refuses_a_foreign_metrics_file(tmp_path):
    assert episode_end(episode_start_json(3, "policy", 1.0)) is None
    assert episode_end(episode_result(3, True, 5).to_json()).episode == 3
    for bad in ("not json", "[1]", '{"kind": "end", "episode": 1}', '{"kind": "middle"}'):
        with pytest.raises(ValueError, match="not an episode result"):
            episode_end(bad)
    (tmp_path / "metrics.csv").write_text("env_steps,success_rate\n0,0.0\n")  # what `msdp train` writes, say
    with pytest.raises(MetricsError, match=r"metrics.csv: no column wall_s"):
        ProgressLog(tmp_path)


def test_the_learners_lag_travels_in_the_weights_label():
    from msdp_policy.learner import ActorWeightsGate, updates_behind

    assert updates_behind("critic_updates=500 env_steps=400 behind=320") == 320
    assert updates_behind("critic_updates=500 env_steps=400") == 0  # a learner from before the lag was published
    actor = Actor(AgentConfig(hidden=16), MODEL.width, 4)
    ActorWeightsGate(actor).accept(actor_to_bytes(actor), "critic_updates=500 env_steps=400 behind=320")
