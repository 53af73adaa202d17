"""Command-line entry point.

  python -m ntkft.run --config=configs/glue_linearized.py --workdir=runs/x \\
      --config.task=rte --config.lam=0.1

Re-running the same command resumes from the last checkpoint in --workdir.
Errors print one ``error:`` line (``--verbose`` for the traceback; ntkft.cli).
"""
from ntkft import cli


def run(config, workdir: str) -> None:
  from ntkft.train import loop  # after flag parsing: keeps --help fast
  loop.run(config, workdir)


if __name__ == "__main__":
  cli.run_main(run)
