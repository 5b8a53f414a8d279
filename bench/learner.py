"""Learner speed: critic + actor updates per second at batch 256, batches drawn from a real transition log.

Usage: python bench/learner.py [--bridge cross_attention|pooling|cls|concat] [--variant msdp_frozen|scratch]
[--updates N] [--threads N] [--device auto|cpu|cuda] [--precision fp32|bf16] [--profile] [--compile]. A log of
2,000 transitions in the schema training uses (66 x 128 bfloat16 tokens, or raw observations for ``scratch``) is
written to a temporary folder; each update samples a batch from it through ``Replay`` (gathering and widening
included), copies it to the device and runs one critic update and one actor + temperature update (the
critic-to-actor ratio 1 case). For ``scratch``, every update also runs the encoder on the 2 x 256
raw observations and backpropagates the critic loss into it. Values do not change the cost.

Where the limit is: the bench counts the floating-point work of one update (torch's FlopCounterMode) and times a
large matmul in the same precision, which bounds the rate from the arithmetic alone; ``--profile`` adds the time
the update's matmul and fused Adam kernels take at this network's shapes, plus the batch sampling, which bounds it
with these kernels, and the top operators; and the update's fixed cost (the same update at batch 8, less its own
kernels), which added to that bounds it when run eagerly (operator by operator, as PyTorch does without a compiler).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from limits import OperatorTraffic, fixed_cost_ms, kernel_floor_ms, matmul_gflops, stream_gbytes_per_s
from torch.utils.flop_counter import FlopCounterMode

from msdp.config import from_dict
from msdp.devices import DEVICES, PRECISIONS, resolve_device
from msdp_perception.model import MSDPConfig, MSDPModel
from msdp_policy.agent import BRIDGES, AgentConfig, SACAgent
from msdp_policy.learner_process import keep_freed_memory
from msdp_policy.replay import ENCODER_VARIANTS, Replay, embedding_record, transition_schema
from msdp_policy.transition_log import TransitionReader, TransitionWriter

TINY_BATCH = 8  # small enough that its kernels cost next to nothing: what is left is the fixed cost


def fill_log(folder: Path, variant: str, model: MSDPConfig, transitions: int) -> None:
    rng = np.random.default_rng(0)
    schema = transition_schema(variant, model, model.action_dim)
    with TransitionWriter(folder, schema, durable=False) as writer:
        for i in range(transitions):
            record = {
                "episode": np.int64(i // 100), "action": rng.uniform(-1, 1, 4).astype(np.float32),
                "reward": np.float32(-1.0), "terminal": np.bool_(False), "final": np.bool_(i % 100 == 99),
            }  # fmt: skip
            if variant == "msdp_frozen":
                tokens = rng.normal(size=(model.n_tokens, model.width)).astype(np.float32)
                record.update(embedding_record(tokens, np.ones(model.n_tokens, bool), tokens[0]))
            else:
                record.update(
                    image=rng.integers(0, 255, (model.image_size, model.image_size, 3), dtype=np.uint8),
                    wrench=rng.normal(size=(model.ft_window, 6)).astype(np.float32),
                    proprio=rng.normal(size=model.proprio_dim).astype(np.float32),
                    sensors=np.ones(3, bool),
                )
            writer.append(record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bridge", default="cross_attention", choices=BRIDGES)
    parser.add_argument("--variant", default="msdp_frozen", choices=ENCODER_VARIANTS)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (this machine has 2 cores)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--profile", action="store_true", help="also profile 50 updates (time per operator)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the critic and actor updates first")
    args = parser.parse_args()
    device = resolve_device(args.device)
    keep_freed_memory()  # as msdp train and its learner process do
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MSDPConfig()
    config = from_dict(AgentConfig, {"bridge": args.bridge, "batch_size": args.batch_size, "precision": args.precision})
    encoder = MSDPModel(model) if args.variant == "scratch" else None
    agent = SACAgent(config, model.width, model.n_tokens, model.action_dim, encoder=encoder).to(device)
    if args.compile:  # fused kernels for the element-wise work; compiled on the warm-up updates
        agent.update_critic, agent.update_actor = torch.compile(agent.update_critic), torch.compile(agent.update_actor)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="msdp-bench-") as tmp:
        fill_log(Path(tmp), args.variant, model, 2000)
        replay = Replay(TransitionReader(tmp))

        def update() -> dict:
            return agent.update({k: v.to(device) for k, v in replay.sample(args.batch_size, rng).items()})

        for _ in range(5):
            update()
        start = time.perf_counter()
        for _ in range(args.updates):
            metrics = update()
        float(metrics["critic_loss"])  # wait for the device
        elapsed = time.perf_counter() - start
        with FlopCounterMode(display=False) as counter:
            update()
        start = time.perf_counter()
        for _ in range(50):
            replay.sample(args.batch_size, rng)
        sampling_ms = 1e3 * (time.perf_counter() - start) / 50
        if args.profile:
            floor_ms = kernel_floor_ms(update, 50, device) + sampling_ms
            print(f"those kernels and the batch sampling ({sampling_ms:.1f} ms) alone take {floor_ms:.1f} ms: "
                  f"at most {1e3 / floor_ms:.0f} updates/s with these kernels")  # fmt: skip
            with OperatorTraffic() as traffic:
                update()
            print(f"{traffic.operators} operators per update; outside those kernels they move "
                  f"{traffic.bytes / 1e6:.0f} MB, {traffic.bytes / 1e6 / stream_gbytes_per_s():.2f} ms at what an "
                  f"add streams here")  # fmt: skip
            tiny = {k: v.to(device) for k, v in replay.sample(TINY_BATCH, rng).items()}
            fixed_ms = fixed_cost_ms(lambda: agent.update(tiny), 100, device)
            print(f"an update at batch {TINY_BATCH} costs {fixed_ms:.1f} ms outside those kernels (its operators, "
                  f"autograd, Python): run eagerly, at most {1e3 / (floor_ms + fixed_ms):.0f} updates/s")  # fmt: skip
    parameters = sum(p.numel() for p in agent.parameters() if p.requires_grad)
    print(f"variant: {args.variant}  bridge: {args.bridge}  batch: {args.batch_size}  "
          f"trainable parameters: {parameters / 1e6:.2f} M")  # fmt: skip
    per_update_ms = 1e3 * elapsed / args.updates
    print(f"device: {device}  precision: {args.precision}  torch threads: {torch.get_num_threads()}  "
          f"ms per update (batch sampling included): {per_update_ms:.1f}")  # fmt: skip
    gflop, peak = counter.get_total_flops() / 1e9, matmul_gflops(device, args.precision)
    print(f"{gflop:.2f} GFLOP per update, {gflop * args.updates / elapsed:.0f} GFLOP/s achieved; a 1024^3 matmul "
          f"runs at {peak:.0f} GFLOP/s here, so the arithmetic alone allows at most "
          f"{peak / gflop:.0f} updates/s")  # fmt: skip
    print(f"learner_updates_per_s: {args.updates / elapsed:.1f}")


if __name__ == "__main__":
    main()
