"""The pre-registered layer-selection study (docs/preregistration.md §6, issue 15).

  python -m experiments.selection_study --config=configs/selection_study.py --workdir=W \
      --config.kappa_results=docs/results/kappa_study/results.json
  python -m experiments.selection_study --config=configs/selection_study.py:runlocal \
      --workdir=/tmp/s

The criterion comes from the kappa study's SST-2 runs (``kappa_results``; the
held-out task) by the pre-registered rule; without ``kappa_results`` the
``criterion``/``regime``/``lam`` fields below are used and the results say so
(runlocal, smoke tests). Training settings are the kappa study's.
"""
from configs import kappa_study
from ntkft import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  c = kappa_study.get_config("runlocal" if arg.runlocal else None)
  for key in ("layer_sets", "lams", "regimes", "tangent", "lin_gap_max", "min_effect"):
    del c[key]
  c.tasks = ("mrpc", "rte", "cola")
  c.seeds = tuple(range(6))
  c.kappa_results = ""              # kappa_study results.json: the criterion, regime and λ
  c.criterion_task = "sst2"         # the held-out task the criterion is chosen on
  c.criterion = dict(kernel="plain_flat_head", stat="kappa", direction="min")  # fallback
  c.regime = "b"                    # fallback regime and λ
  c.lam = 0.0
  c.num_random = 3                  # random pairs per seed (their mean is the random arm)
  c.baselines = dict(last2=(4, 5), first2=(0, 1))
  if arg.runlocal:
    c.tasks = ("mrpc",)
    c.seeds = (0, 1)
    c.num_random = 1
  return c
