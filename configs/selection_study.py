"""The pre-registered layer-selection study (docs/preregistration.md §6, Amendment 2.9).

  python -m experiments.selection_study --config=configs/selection_study.py --workdir=W
  python -m experiments.selection_study --config=configs/selection_study.py:runlocal \
      --workdir=/tmp/s [--config.kappa_workdir=/tmp/k]

The kernels and the runs of seeds 0-2 are the kappa study's points, read from
``kappa_workdir`` (its workdir: ``points/`` and ``results.json``); the other
seeds are computed into ``W/points`` with the kappa study's code. The training
settings are the kappa study's: this config is built from configs/kappa_study.py,
and the fields that shape a point (``finetune``, the chosen regime's
``regimes_def``, ``plateau``, ``kernel_chunk``) must equal those stored in the
kappa results (the study refuses otherwise). The criterion, regime and λ come
from the kappa study's results by the pre-registered rule on
``criterion_task``; with ``criterion_from_kappa=False`` the ``criterion`` /
``regime`` / ``lam`` fields below are used and the results say so (runlocal,
smoke tests). ``kappa_workdir=""``: nothing is reused, every point is computed
here.

runlocal: the kappa study's runlocal settings on MRPC, 3 of the 15 pairs (the two
baselines and (2, 3)), seeds 0-1, one random pair, the config criterion, and no
kappa workdir by default (tests point ``kappa_workdir`` at a kappa runlocal
workdir over the same task and pairs and seed 0, which is then reused).
"""
from configs import kappa_study
from ntkft import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  c = kappa_study.get_config("runlocal" if arg.runlocal else None)
  for key in ("lams", "regimes", "tangent", "lin_gap_max", "min_effect"):
    del c[key]
  # Kept from the kappa study: layer_sets (the sets of the kernel points this study
  # computes, as the kappa study's), finetune, regimes_def, plateau, kernel_chunk,
  # num_boot, boot_seed, alpha, max_seconds, collect_only, xla_cache.
  c.tasks = ("mrpc", "rte", "cola")
  c.seeds = tuple(range(6))
  c.pairs = ()                      # (): the 15 pairs of 6 layers (the budget: 2 layers)
  c.kappa_workdir = "docs/results/kappa_study"  # its points/ are reused ("" : none)
  c.criterion_from_kappa = True     # the rule on <kappa_workdir>/results.json; False: below
  c.criterion_task = "sst2"         # the held-out task the criterion is chosen on
  c.criterion = dict(kernel="plain_flat_head", stat="kappa", direction="min")  # fallback
  c.regime = "b"                    # fallback regime and λ
  c.lam = 0.0
  c.num_random = 3                  # random pairs per seed (their mean is the random arm)
  c.baselines = dict(last2=(4, 5), first2=(0, 1))
  if arg.runlocal:
    c.tasks = ("mrpc",)
    c.seeds = (0, 1)
    c.pairs = ((0, 1), (2, 3), (4, 5))
    c.layer_sets = c.pairs
    c.kappa_workdir = ""
    c.criterion_from_kappa = False
    c.num_random = 1
  return c
