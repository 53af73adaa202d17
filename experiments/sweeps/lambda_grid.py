"""λ (pull strength) × trained layers × task × seed grid for ``ntkft.sweep``.

  python -m ntkft.sweep --sweep=experiments/sweeps/lambda_grid.py \\
      --config=configs/glue_linearized.py:runlocal --workdir=runs/lambda_grid --shard=0/4
  python -m ntkft.sweep --sweep=experiments/sweeps/lambda_grid.py --config=... \\
      --workdir=runs/lambda_grid --collect

The default grid is deliberately small (3 λ × 2 layer choices × 1 task × 1 seed
= 6 points) so that it finishes on a CPU with ``:runlocal``; pass a larger
grid through ``get_sweep(arg)`` (``--sweep=...lambda_grid.py:full``: 5 λ × 3
layer choices × 2 tasks × 3 seeds = 90 points) for real runs.
"""
import itertools


def get_sweep(arg=None):
  """A list of config-override dicts (dotted keys, as ``--config.<key>=`` takes)."""
  if arg == "full":
    lams, layers, tasks, seeds = (0.0, 0.01, 0.1, 1.0, 10.0), ("all", "0,1,2", "3,4,5"), \
        ("sst2", "rte"), (0, 1, 2)
  elif arg in (None, "", "small"):
    lams, layers, tasks, seeds = (0.0, 0.1, 1.0), ("all", "4,5"), ("sst2",), (0,)
  else:
    raise ValueError(f"lambda_grid: unknown argument {arg!r}; use 'small' (default) or 'full'")
  return [{"task": t, "seed": s, "peft.layers": l, "lam": lam}
          for t, s, l, lam in itertools.product(tasks, seeds, layers, lams)]
