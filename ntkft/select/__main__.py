"""``python -m ntkft.select --config=configs/select_layers.py[:args] --workdir=W``.

See :mod:`ntkft.select.cli`.
"""
from ntkft import cli
from ntkft.select import cli as select_cli

if __name__ == "__main__":
  cli.run_main(select_cli.run)
