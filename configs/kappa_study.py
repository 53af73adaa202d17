"""The pre-registered kappa study (docs/preregistration.md with Amendment 2; issues 15, 20).

  python -m experiments.kappa_study --config=configs/kappa_study.py --workdir=W
  python -m experiments.kappa_study --config=configs/kappa_study.py:runlocal --workdir=/tmp/k

A sweep of points, seed-major: per (seed, task) one kernel point (the 8 kernels'
predictors of every layer set at the runs' exact θ0 on their n_train examples,
float64 Grams), then one run point per (layer set, regime, λ) (+ the tangent
runs), all of a (seed, task) in one warm runner. Each point writes
``W/points/<id>.json`` when done; a rerun skips finished points, so interrupting
loses at most the point in progress; ``W/results.json`` is written from all
finished points when the process ends (``max_seconds``, all done, or
``collect_only``) and holds the verdicts of every hypothesis whose cells are
complete.

Design fields mirror the pre-registration; changing them for the full study is
an amendment (log it there). ``finetune`` overrides configs/glue_common.py for
every run; ``regimes`` add the loss and optimizer of each regime; regime "a"'s
lr is set per run to 1/(λmax(K_flat)/n + λ) from the run's own kernel.
"""
import ml_collections

from ntkft import config_lib

TASKS = ("sst2", "mrpc", "rte", "cola")


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  c = ml_collections.ConfigDict()
  c.tasks = TASKS
  c.layer_sets = ()                 # (): the 6 single layers and the 15 pairs (Amendment 2)
  c.seeds = (0, 1, 2)
  c.lams = (0.0, 10.0)
  c.regimes = ("a", "b")
  c.tangent = dict(tasks=("sst2",), regime="a", lams=(0.0,))  # tangent-model runs
  c.kernel_chunk = 32               # examples per Jacobian chunk
  c.max_seconds = 0.0               # stop starting points after this long (0: no limit)
  c.collect_only = False            # True: only rebuild results.json from the stored points
  c.num_boot = 2000
  c.boot_seed = 0
  c.alpha = 0.05                    # Holm family-wise level
  c.lin_gap_max = 0.2               # "linearization holds": median lin_gap <= this
  c.min_effect = 0.2                # refuted if the CI excludes effects beyond this
  c.plateau = dict(window=24, rel=0.05, abs=0.005)
  c.xla_cache = True                # persistent compilation cache in <workdir>/xla_cache
  c.finetune = dict(
      model=dict(name="minilm-l6", pooling="mean", load_head=True, dropout=0.0),
      peft=dict(methods=("lora",), targets=("query", "value"), rank=8, alpha=16.0,
                dropout=0.0, init="zero_b", head=True),
      data=dict(kshot="512-13", train_split="train", eval_split="test", n_train=128,
                n_eval=256, stratified=True, max_len=64, buckets=(32, 64), batch_size=16,
                eval_batch_size=256),
      train=dict(steps=96, log_every=8, eval_every=0, ckpt_every=1_000_000, ckpt_keep=1,
                 progress=False),
      prefix_cache=True, lin_gap=True)
  c.regimes_def = dict(
      a=dict(loss="squared", optim=dict(name="sgd", lr=0.0, warmup_steps=0, decay="constant",
                                        momentum=0.0, clip_norm=0.0)),
      b=dict(loss="cross_entropy", optim=dict(name="adam", lr=5e-3, warmup_steps=4,
                                              decay="linear", clip_norm=1.0)))
  if arg.runlocal:
    c.tasks = ("sst2",)
    c.layer_sets = ((5,), (4, 5))
    c.seeds = (0, 1)
    c.lams = (0.0, 10.0)
    c.kernel_chunk = 16
    c.num_boot = 200
    c.plateau.window = 2
    c.finetune.data.n_train = 16
    c.finetune.data.n_eval = 16
    c.finetune.data.max_len = 32
    c.finetune.data.buckets = (32,)
    c.finetune.data.batch_size = 8
    c.finetune.data.eval_batch_size = 16
    c.finetune.train.steps = 4
    c.finetune.train.log_every = 1
    c.regimes_def.b.optim.warmup_steps = 1
  return c
