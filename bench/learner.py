"""Learner speed: critic + actor updates per second at batch 256 on this machine's CPU cores.

Usage: python bench/learner.py [--bridge cross_attention|pooling|cls|concat] [--updates N].
Batches of frozen-encoder-sized embeddings (66 tokens x 128, as /msdp/embedding carries) are drawn from a
replay of random embeddings; one update = one critic update and one actor + temperature update (the
critic-to-actor ratio 1 case). Embedding values do not change the cost.
"""

import argparse
import time

import torch

from msdp.config import from_dict
from msdp_perception.model import MSDPConfig, pool_tokens
from msdp_policy.agent import BRIDGES, AgentConfig, SACAgent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bridge", default="cross_attention", choices=BRIDGES)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = MSDPConfig()
    config = from_dict(AgentConfig, {"bridge": args.bridge, "batch_size": args.batch_size})
    agent = SACAgent(config, model.width, model.n_tokens, model.action_dim)
    replay = torch.nn.functional.layer_norm(torch.randn(4096, model.n_tokens, model.width), (model.width,))
    present = torch.ones(4096, model.n_tokens, dtype=torch.bool)

    def batch() -> dict[str, torch.Tensor]:
        i, j = torch.randint(4096, (2, args.batch_size))
        return {
            "tokens": replay[i], "present": present[i], "pooled": pool_tokens(replay[i], present[i], 64),
            "next_tokens": replay[j], "next_present": present[j], "next_pooled": pool_tokens(replay[j], present[j], 64),
            "action": torch.rand(args.batch_size, model.action_dim) * 2 - 1,
            "reward": torch.randn(args.batch_size), "terminal": torch.zeros(args.batch_size),
        }  # fmt: skip

    for _ in range(5):
        agent.update(batch())
    start = time.perf_counter()
    for _ in range(args.updates):
        agent.update(batch())
    elapsed = time.perf_counter() - start
    parameters = sum(p.numel() for p in agent.parameters() if p.requires_grad)
    print(f"bridge: {args.bridge}  batch: {args.batch_size}  trainable parameters: {parameters / 1e6:.2f} M")
    per_update_ms = 1e3 * elapsed / args.updates
    print(f"torch threads: {torch.get_num_threads()}  ms per update (batch sampling included): {per_update_ms:.1f}")
    print(f"learner_updates_per_s: {args.updates / elapsed:.1f}")


if __name__ == "__main__":
    main()
