"""Where a batched ``digits-mlp`` step spends its time: the vector env's operators at N students,
and the DLN's hidden-layer matmul alone, repeated on one input, for comparison.

Profiles ``--steps`` teaching steps (random actions, after one warm-up step) with
``torch.profiler`` (shapes recorded) and prints the operators by self CPU time, then times
``torch.bmm`` of the DLN's hidden-layer shape ``[N, B*C, 40] x [N, 40, 40]`` alone: the gap between
the two per-call times is what memory traffic adds inside a real step.

python benchmarks/vector_env_profile.py --threads 1 --n 64 --lookahead off
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.profiler import profile  # noqa: E402

from _common import NO_TRUNCATION, add_common_args, finish_common_args, print_header  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, ["digits-mlp"], repeats=1, warmup=1)
    parser.add_argument("--n", type=int, default=64, help="students in the vector env (default 64)")
    parser.add_argument("--lookahead", default="off", choices=["off", "K"])
    parser.add_argument("--steps", type=int, default=3, help="teaching steps profiled (default 3)")
    parser.add_argument("--rows", type=int, default=15, help="operators listed (default 15)")
    args = parser.parse_args()
    finish_common_args(args, ["digits-mlp"], repeats=1, warmup=1)
    print_header(f"profile of a vector env step: N = {args.n}, look-ahead {args.lookahead}", args)
    envs = gym.make_vec("L2T-v0", num_envs=args.n, vectorization_mode="vector_entry_point", batching="vmap",
                        task=args.tasks[0], lookahead=args.lookahead, device=args.device, **{**args.task_overrides, **NO_TRUNCATION})
    envs.reset(seed=args.seed)
    rng = np.random.default_rng(args.seed)

    def step() -> None:
        envs.step(rng.uniform(-1, 1, envs.action_space.shape).astype(np.float32))

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    with profile(record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
    seconds = time.perf_counter() - start
    k = envs.unwrapped.config.unroll_steps
    print(f"{args.steps} teaching steps ({args.steps * k} batched student steps) in {seconds:.2f} s under the profiler")
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=40))

    cfg = envs.unwrapped.config
    classes = gym.make("L2T-v0", task=args.tasks[0], lookahead="off", **args.task_overrides).unwrapped.raw.num_classes
    width = envs.unwrapped.loss_family.shapes[1][1]  # the DLN's hidden width
    h = torch.randn(args.n, cfg.batch_size * classes, width)  # B x C rows of the one-vs-one view
    w = torch.randn(args.n, width, width)
    for _ in range(5):
        torch.bmm(h, w)
    reps = 50
    start = time.perf_counter()
    for _ in range(reps):
        torch.bmm(h, w)
    alone = (time.perf_counter() - start) / reps
    print(f"torch.bmm {list(h.shape)} x {list(w.shape)} alone, repeated on one input: {alone * 1e3:.3f} ms per call "
          f"({2 * h.numel() * width / alone / 1e9:.1f} GFLOP/s); compare the profile's row of that shape")


if __name__ == "__main__":
    main()
