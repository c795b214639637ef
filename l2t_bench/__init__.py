"""The ``l2t`` command line and the teacher benchmark harness, on top of ``l2t_env`` and ``agents``."""
