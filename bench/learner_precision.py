"""Does bfloat16 autocast hold the RL losses? The same learner updates in float32 and in bf16, against the spread
between two float32 seeds.

Usage: python bench/learner_precision.py [--log TRANSITIONS] [--updates N] [--threads N]. Three agents learn
offline from one transition log (``--log``: a run's ``transitions`` folder; without it, a synthetic log whose
reward is a fixed function of the tokens): float32 and bf16 from the same initial weights on the same batches,
and float32 from another seed on other batches. Every agent is then scored in float32 on the same held-out
batches: its TD loss, mean Q, and its mean action. bf16 holds the losses where its distance to the float32 run is
no larger than the distance between the two float32 seeds. Last line ``bf16_td_loss_ratio: r`` (bf16 held-out
TD loss / float32's, same seed).
"""

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from msdp.config import from_dict
from msdp_perception.model import MSDPConfig
from msdp_policy.agent import AgentConfig, SACAgent
from msdp_policy.learner_process import keep_freed_memory
from msdp_policy.replay import Replay, embedding_record, transition_schema
from msdp_policy.transition_log import TransitionLogError, TransitionReader, TransitionWriter


def synthetic_log(folder: Path, model: MSDPConfig, transitions: int) -> None:
    """Random tokens in 100-step episodes; the reward is a fixed linear function of the pooled vector and the
    action, so the critic has something to learn."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=model.width) / np.sqrt(model.width)
    schema = transition_schema("msdp_frozen", model, model.action_dim)
    with TransitionWriter(folder, schema, durable=False) as writer:
        for i in range(transitions):
            tokens = rng.normal(size=(model.n_tokens, model.width)).astype(np.float32)
            action = rng.uniform(-1, 1, model.action_dim).astype(np.float32)
            reward = float(tokens[0] @ direction) - float(np.abs(action).sum())
            record = {"episode": np.int64(i // 100), "action": action, "reward": np.float32(reward),
                      "terminal": np.bool_(False), "final": np.bool_(i % 100 == 99), "intervention": np.bool_(False),
                      **embedding_record(tokens, np.ones(model.n_tokens, bool), tokens[0])}  # fmt: skip
            writer.append(record)


def train(replay: Replay, precision: str, seed: int, updates: int, model: MSDPConfig) -> tuple[SACAgent, list]:
    torch.manual_seed(seed)
    config = from_dict(AgentConfig, {"precision": precision})
    agent = SACAgent(config, model.width, model.n_tokens, model.action_dim)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in tqdm(range(updates), desc=f"{precision} seed {seed}", unit="update", leave=False):
        losses.append(float(agent.update(replay.sample(config.batch_size, rng))["critic_loss"]))
    return agent, losses


@torch.no_grad()
def score(agent: SACAgent, batches: list[dict[str, torch.Tensor]]) -> dict[str, float | np.ndarray]:
    """Held-out TD loss, mean Q and mean actions, all computed in float32."""
    agent.config = dataclasses.replace(agent.config, precision="fp32")
    torch.manual_seed(12345)  # the same target-action noise for every agent
    td = [float(agent.td_loss(b)) for b in batches]
    q, actions = [], []
    for batch in batches:
        features = agent.features(batch)
        q.append(float(agent.critic(features.tokens, features.token_present, batch["action"]).mean()))
        actions.append(agent.act(features.pooled, deterministic=True).numpy())
    return {"td_loss": float(np.mean(td)), "q": float(np.mean(q)), "actions": np.concatenate(actions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", type=Path, help="a transition log folder (a run's transitions); default: synthetic")
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    model = MSDPConfig()
    with tempfile.TemporaryDirectory(prefix="msdp-precision-") as tmp:
        folder = args.log
        if folder is None:
            folder = Path(tmp)
            synthetic_log(folder, model, 4000)
        try:
            replay = Replay(TransitionReader(folder))
        except TransitionLogError as exc:
            parser.error(f"--log: {exc}")
        if "tokens" not in replay.reader.schema.fields:
            parser.error(f"--log: {folder} holds raw observations (scratch); this bench needs a frozen encoder's log")
        if not len(replay):
            parser.error(f"--log: {folder} holds no complete transition yet")
        source = args.log or "synthetic (4,000 transitions)"
        print(f"log: {source}; {len(replay)} transitions; {args.updates} updates each")
        held_out_rng = np.random.default_rng(999)
        held_out = [replay.sample(256, held_out_rng) for _ in range(8)]
        runs = {}
        for name, precision, seed in (("fp32", "fp32", 0), ("bf16", "bf16", 0), ("fp32 seed 1", "fp32", 1)):
            started = time.perf_counter()
            agent, losses = train(replay, precision, seed, args.updates, model)
            runs[name] = {**score(agent, held_out), "train_loss": float(np.mean(losses[-100:]))}
            print(f"{name:12s} last-100 training loss {runs[name]['train_loss']:.4f}  held-out TD loss "
                  f"{runs[name]['td_loss']:.4f}  mean Q {runs[name]['q']:.3f}  "
                  f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    base, bf16, other = runs["fp32"], runs["bf16"], runs["fp32 seed 1"]
    for label, run in (("bf16 vs fp32", bf16), ("fp32 seed 1 vs seed 0", other)):
        action_gap = float(np.abs(run["actions"] - base["actions"]).mean())
        print(f"{label:22s} |TD loss difference| {abs(run['td_loss'] - base['td_loss']):.4f}  "
              f"|mean Q difference| {abs(run['q'] - base['q']):.3f}  "
              f"mean |action difference| {action_gap:.3f}")  # fmt: skip
    print(f"bf16_td_loss_ratio: {bf16['td_loss'] / base['td_loss']:.3f}")


if __name__ == "__main__":
    main()
