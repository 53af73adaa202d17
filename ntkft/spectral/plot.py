"""Eigenvalue plots (matplotlib Agg canvas; no pyplot global state)."""
import os
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def plot_spectrum(eigs: Any, path: str, title: str) -> str:
  """Saves a log-scale plot of a spectrum, largest eigenvalue first, as PNG.

  Args:
    eigs: (n,) eigenvalues in any order (or a dict ``label -> eigs`` to overlay
      several spectra). Non-positive values cannot be shown on a log axis and
      are dropped; the legend says how many.
    path: output ``.png`` path; parent directories are created.
    title: figure title.

  Returns:
    ``path``.
  """
  series = eigs if isinstance(eigs, dict) else {"": eigs}
  fig = Figure(figsize=(6.0, 4.0), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  any_labels = False
  for label, values in series.items():
    values = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))[::-1]
    index = np.arange(1, values.shape[0] + 1)
    keep = values > 0.0
    dropped = int(values.shape[0] - keep.sum())
    text = str(label)
    if dropped:
      text = f"{text} ({dropped} non-positive dropped)".strip()
    any_labels = any_labels or bool(text)
    ax.plot(index[keep], values[keep], marker=".", markersize=3,
            linewidth=1.0, label=text or None)
  ax.set_yscale("log")
  ax.set_xlabel("eigenvalue index")
  ax.set_ylabel("eigenvalue")
  ax.set_title(title)
  ax.grid(True, which="major", alpha=0.3)
  if any_labels:
    ax.legend()
  fig.tight_layout()
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  fig.savefig(path, format="png")
  return path
