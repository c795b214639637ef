"""Built-in YAML configs, installed as ``l2t_env.configs`` (tasks, agents, benchmarks)."""
