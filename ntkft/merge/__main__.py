"""``python -m ntkft.merge --runs=W1,W2 --alpha=0.4 --method=sum|ties --out=DIR [--export]``.

See :mod:`ntkft.merge.cli`.
"""
from ntkft import cli
from ntkft.merge import cli as merge_cli

if __name__ == "__main__":
  merge_cli.define_flags()
  cli.main(merge_cli.main, required=("runs", "alpha", "out"))
