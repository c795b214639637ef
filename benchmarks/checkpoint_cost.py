"""What a mid-episode checkpoint costs: its size, the time to write and to resume, against one step.

Per task, with the ``l2t-dln`` teacher (the largest teacher state: LSTM, Adam moments, memory),
after ``--steps`` teaching steps of an episode:

- ``env MiB`` / ``teacher MiB``: ``torch.save`` sizes of ``env.unwrapped.state_dict()`` and of
  ``teacher.state_dict()``; ``file MiB``: the whole checkpoint file (both, the partial record, RNGs).
- ``write ms``: :func:`l2t_bench.episodes.write_checkpoint` (both state dicts, ``torch.save`` to a
  temporary file, fsync, rename, fsync of the folder): what ``checkpoint_every`` adds per checkpoint.
- ``resume ms``: :func:`l2t_bench.episodes.resume_checkpoint` into a freshly made env and teacher
  (load, rebuild split, student, stream; restore teacher); the data loading of ``gym.make`` excluded.
- ``step ms``: one l2t-dln teaching iteration (act + step: two K-step unrolls and a commit).
- ``write / step``: the write as a fraction of one teaching iteration; checkpointing every N steps
  costs this divided by N.

Medians over ``--repeats`` after ``--warmup``. Full run (CPU):
    python benchmarks/checkpoint_cost.py --threads 1 --json runs/bench/checkpoint_cost.json
Smoke run:
    python benchmarks/checkpoint_cost.py --quick --threads 1
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    add_common_args,
    finish_common_args,
    fmt_mib,
    fmt_ms,
    median,
    print_header,
    print_table,
    task_spec,
    timed,
    write_json,
)

import torch  # noqa: E402

from l2t_agents import make_env, make_teacher  # noqa: E402
from l2t_agents.evaluation import start_episode  # noqa: E402
from l2t_bench.episodes import resume_checkpoint, write_checkpoint  # noqa: E402

DEFAULT_TASKS = ["digits-mlp", "random-cifar10-resnet8", "random-cifar10-resnet8-wide"]


def saved_bytes(obj: object) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.tell()


def measure(task: str, args: argparse.Namespace, folder: Path) -> dict:
    name, extra = task_spec(task)
    overrides = {**extra, **args.task_overrides, "teaching_steps": 10**9}

    def new():
        teacher = make_teacher("l2t-dln")
        return make_env(teacher, name, device=args.device, **overrides), teacher

    env, teacher = new()
    record, obs = start_episode(env, teacher, args.seed)
    step_times = []
    for i in range(args.steps):
        seconds, out = timed(lambda: env.step(teacher.act(obs)), args.device)
        obs = out[0]
        teacher.observe(*out[:4], out[4])
        record.steps += 1
        if i >= args.warmup:
            step_times.append(seconds)
    path = folder / f"{task}.pt"
    writes, resumes = [], []
    fresh_env, fresh_teacher = new()
    for r in range(args.warmup + args.repeats):
        w, _ = timed(lambda: write_checkpoint(path, env, teacher, args.seed, record), args.device)
        s, _ = timed(lambda: resume_checkpoint(path, fresh_env, fresh_teacher, args.seed), args.device)
        if r >= args.warmup:
            writes.append(w)
            resumes.append(s)
    return {
        "task": task,
        "env_bytes": saved_bytes(env.unwrapped.state_dict()),
        "teacher_bytes": saved_bytes(teacher.state_dict()),
        "file_bytes": path.stat().st_size,
        "write_s": median(writes),
        "resume_s": median(resumes),
        "step_s": median(step_times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, DEFAULT_TASKS, repeats=5, warmup=1)
    parser.add_argument("--steps", type=int, default=4, help="teaching steps before the checkpoint (default 4; the first --warmup not timed)")
    args = parser.parse_args()
    finish_common_args(args, DEFAULT_TASKS, repeats=5, warmup=1, quick_tasks=["digits-mlp"])
    info = print_header("mid-episode checkpoint cost (l2t-dln teacher)", args)
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(task, args, Path(tmp)) for task in args.tasks]
    print_table(
        ["task", "env MiB", "teacher MiB", "file MiB", "write ms", "resume ms", "step ms", "write / step"],
        [
            [r["task"], fmt_mib(r["env_bytes"]), fmt_mib(r["teacher_bytes"]), fmt_mib(r["file_bytes"]), fmt_ms(r["write_s"]),
             fmt_ms(r["resume_s"]), fmt_ms(r["step_s"]), f"{r['write_s'] / r['step_s']:.1%}"]
            for r in results
        ],
    )
    write_json(args.json, {"environment": info, "args": {k: v for k, v in vars(args).items() if k != "json"}, "results": results})


if __name__ == "__main__":
    main()
