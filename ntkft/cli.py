"""Shared command-line plumbing for ``--config=<file>[:args] --workdir=<dir>`` tools.

Flags are defined only when a tool runs as ``__main__`` (``run_main``), never at
import time, so every tool's ``run(config, workdir)`` can be imported from tests,
notebooks and other tools in one process.
"""
from typing import Callable

from absl import app, flags, logging
from ml_collections import config_flags


def define_flags() -> None:
  """Defines --config (locked ConfigDict from a file) and --workdir, once."""
  if "config" not in flags.FLAGS:
    config_flags.DEFINE_config_file("config", None, "Config file (path[:args]).",
                                    lock_config=True)
  if "workdir" not in flags.FLAGS:
    flags.DEFINE_string("workdir", None, "Output folder.")


def run_main(run_fn: Callable[..., object]) -> None:
  """Parses flags and calls ``run_fn(config, workdir)``; for ``if __name__ == '__main__'``."""
  define_flags()
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    run_fn(flags.FLAGS.config, flags.FLAGS.workdir)

  app.run(main)
