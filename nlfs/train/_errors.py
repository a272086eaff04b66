"""The trainer's two errors. A setting that cannot work here is a :class:`ConfigError`, found before
any work (``check_config``) and reported in one line. Inside a run, an exception that is not the
loss's numerical failure is a :class:`TrainingError`, recorded as an ``error`` (retried), never
``diverged`` (final)."""


class ConfigError(ValueError):
    """A setting that cannot work here; the message says which and how to fix it."""


class TrainingError(RuntimeError):
    """Training stopped on an exception that is not a numerical failure of the loss (a backend
    error, out of memory, a bug): the run is an ``error``, not ``diverged``."""
