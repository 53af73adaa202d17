"""Command-line entry point.

  python -m ntkft.run --config=configs/glue_linearized.py --workdir=runs/x \\
      --config.task=rte --config.lam=0.1

Re-running the same command resumes from the last checkpoint in --workdir.
"""
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:args]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (checkpoints, logs, summary).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from ntkft.train import loop  # after flag parsing: keeps --help fast
  loop.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
