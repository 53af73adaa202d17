"""``python -m ntkft.select --config=configs/select_layers.py[:args] --workdir=W``.

See :mod:`ntkft.select.cli`. ``ntkft.ntk_report`` (imported by the CLI) already
defines ``--config`` and ``--workdir`` on the global absl flags with the same
meaning; they are defined here only if absent, so both modules can be imported
in one process.
"""
from absl import app, flags
from ml_collections import config_flags

from ntkft.select import cli

if "config" not in flags.FLAGS:
  config_flags.DEFINE_config_file("config", None, "Config file (path[:args]).",
                                  lock_config=True)
if "workdir" not in flags.FLAGS:
  flags.DEFINE_string("workdir", None, "Output folder.")

if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(cli.main)
