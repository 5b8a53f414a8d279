"""Transition log speed: durable appends per second, and how long a restarted writer takes to recover.

Usage: python bench/transition_log.py [--appends N]. One transition is what the policy logs per step, in the
schema of ``msdp_policy.replay.transition_schema``: the observation's 66 x 128 token embedding (bfloat16) and
pooled vector, the action, reward and flags; with ``--raw`` the scratch variant's raw observation. Appends
are fsync'ed (durability on). Recovery: a writer process appending in a loop is killed with SIGKILL, and a new
writer opens the log (scans every record's checksum, drops a torn tail) -- the time a restarted policy waits.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from msdp_perception.model import MSDPConfig
from msdp_policy.replay import transition_schema
from msdp_policy.transition_log import TransitionReader, TransitionWriter

VARIANT = "scratch" if "--raw" in sys.argv else "msdp_frozen"
SCHEMA = transition_schema(VARIANT, MSDPConfig(), 4)


def transition(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random field values of the schema's dtypes and shapes (values do not change the cost)."""
    out = {}
    for name, (dtype, shape) in SCHEMA.fields.items():
        out[name] = (rng.random(shape) * 100).astype(dtype)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--raw", action="store_true", help="the scratch variant's raw-observation records")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    items = [transition(rng) for _ in range(64)]
    with tempfile.TemporaryDirectory(prefix="msdp-bench-") as tmp:
        with TransitionWriter(Path(tmp) / "durable", SCHEMA, durable=True) as writer:
            start = time.perf_counter()
            for i in range(args.appends):
                writer.append(items[i % len(items)])
            durable_s = time.perf_counter() - start
        with TransitionWriter(Path(tmp) / "buffered", SCHEMA, durable=False) as writer:
            start = time.perf_counter()
            for i in range(args.appends):
                writer.append(items[i % len(items)])
            buffered_s = time.perf_counter() - start

        folder = Path(tmp) / "killed"
        script = textwrap.dedent(f"""
            import numpy as np, sys
            sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
            sys.argv += {sys.argv[1:]!r}
            from transition_log import SCHEMA, transition
            from msdp_policy.transition_log import TransitionWriter
            rng = np.random.default_rng(1)
            item = transition(rng)
            writer = TransitionWriter({str(folder)!r}, SCHEMA)
            while True:
                writer.append(item)
                if writer.count == 2000:
                    print("ready", flush=True)
        """)
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        child.stdout.readline()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        start = time.perf_counter()
        writer = TransitionWriter(folder, SCHEMA)
        recovery_s = time.perf_counter() - start
        recovered, dropped = writer.count, writer.dropped_bytes
        writer.close()
        start = time.perf_counter()
        reader = TransitionReader(folder)
        read_s = time.perf_counter() - start

    size = SCHEMA.record_size
    print(f"record ({VARIANT}): {size / 1e3:.1f} kB: {', '.join(SCHEMA.fields)}")
    print(f"buffered appends per s: {args.appends / buffered_s:.0f}  (durable: {args.appends / durable_s:.0f})")
    print(
        f"after SIGKILL: {recovered} transitions recovered, {dropped} torn bytes dropped, writer open "
        f"{1e3 * recovery_s:.0f} ms, reader load {1e3 * read_s:.0f} ms ({len(reader)} transitions)"
    )
    print(f"log_appends_per_s: {args.appends / durable_s:.0f}")


if __name__ == "__main__":
    main()
