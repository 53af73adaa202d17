"""The pre-registered task-arithmetic study (docs/preregistration_task_arithmetic.md; issue 22).

  python -m experiments.task_arithmetic --config=configs/task_arithmetic.py \\
      --workdir=docs/results/task_arithmetic
  python -m experiments.task_arithmetic --config=configs/task_arithmetic.py:runlocal \
      --workdir=/tmp/ta

A resumable sweep: 36 fine-tuning runs (6 tasks × {nonlinear, linearized} LoRA × 3
seeds), then per (mode, seed) one merge point (task addition over every planned
subset, TIES, negation), the ξ grids, and per seed one kernel point. Finished points
are skipped; ``max_seconds`` stops before starting a point; ``collect_only`` rebuilds
results.json from the stored points and computes nothing. Expected: not run yet
(≈ 2.4 machine-hours on the 2-core VM by the preregistration's cost model).

Design fields mirror the preregistration (§1, §3-§5); changing them for the full
study is an amendment, dated and logged there before the first run point. The §5
reductions are fields: ``finetune.train.steps`` (80), ``ties.pairs`` (False),
``subsets.per_k`` (1), ``xi.n_examples`` (32), ``xi.nonlinear_tasks`` (the first four).
``:runlocal``: 2 tasks (SST-2, STS-B: a classifier and the regression head), one seed,
4 steps on 16 examples (the tests swap in a tiny random BERT).
"""
import ml_collections

from ntkft import config_lib

TASKS = ("sst2", "mrpc", "rte", "cola", "qnli", "stsb")   # in this order everywhere
MODES = ("nonlinear", "linearized")


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  c = ml_collections.ConfigDict()
  c.tasks = TASKS
  c.modes = MODES
  c.seeds = (0, 1, 2)
  # Every run: configs/glue_common.py with these fields (preregistration §1 "training").
  c.finetune = dict(
      model=dict(name="minilm-l6", pooling="mean", load_head=True, dropout=0.0),
      peft=dict(methods=("lora",), layers="all", targets=("query", "value"), rank=8,
                alpha=16.0, dropout=0.0, init="zero_b", head=True),
      data=dict(kshot="", train_split="train", eval_split="dev", n_train=1000, n_eval=256,
                stratified=False, max_len=64, buckets=(32, 64), batch_size=32,
                eval_batch_size=128),
      optim=dict(name="adam", lr=1e-3, warmup_steps=10, decay="linear", clip_norm=1.0),
      train=dict(steps=100, log_every=10, eval_every=0, ckpt_every=1_000_000, ckpt_keep=1,
                 progress=False),
      lam=0.0, loss="auto", prefix_cache=False, lin_gap=False)
  # α is chosen on these: n examples of the train split minus the run's training subset,
  # drawn with np.random.default_rng([seed_base, run seed]).
  c.validation = dict(n=64, seed_base=22)
  c.alphas = (0.2, 0.4, 0.6, 0.8, 1.0)       # task addition
  c.normalizer_floor = 0.1                   # v_t(α) / max(v_t^single, floor)
  # k = 2: all pairs; k = len(tasks): all tasks; 2 < k < len(tasks): per_k subsets drawn once
  # with np.random.default_rng(seed).choice from the lexicographic k-subsets (k ascending).
  c.subsets = dict(per_k=2, seed=22)
  c.ties = dict(k=0.2, alphas=(0.5, 1.0, 1.5, 2.0), pairs=True)   # pairs=False: all tasks only
  c.negation = dict(task="sst2", alphas=(0.2, 0.4, 0.6, 0.8, 1.0), control_min=0.95)
  c.xi = dict(grid=(0.0, 0.5, 1.0, 1.5), n_examples=64, regression_tol=0.5,
              nonlinear_seeds=(0,), linearized_seeds=(0, 1, 2),
              nonlinear_tasks=())                # (): every task's pairs
  c.kernel = dict(n_examples=64, energy=0.9, chunk=16)
  # The learned rule (§2): accuracy ≥ majority + margin, F1 ≥ all-positive F1 + margin,
  # Matthews / Pearson ≥ min_correlation.
  c.learned = dict(margin=0.02, min_correlation=0.1)
  c.verdict = dict(num_boot=10_000, seed=2022, level=0.95, refute_below=0.02, max_excluded=6)
  c.exploratory = dict(num_boot=10_000, seed=22)
  c.linear_check_tol = 1e-3                  # tangent sums vs the tangent model, × max(1, |f|)
  c.max_seconds = 0.0                        # stop starting points after this long (0: no limit)
  c.max_run_points = 0                       # stop once this many run points exist (0: no
  #                                            limit); 12: seed 0 only, for §5's projection
  c.collect_only = False
  c.xla_cache = True                         # persistent compilation cache in <workdir>/xla_cache
  if arg.runlocal:
    c.tasks = ("sst2", "stsb")
    c.seeds = (0,)
    c.finetune.data.update(n_train=16, n_eval=16, max_len=32, buckets=(32,), batch_size=8,
                           eval_batch_size=16)
    c.finetune.optim.warmup_steps = 1
    c.finetune.train.update(steps=4, log_every=2)
    c.validation.n = 8
    c.subsets.per_k = 1
    c.xi.update(n_examples=8, linearized_seeds=(0,))
    c.kernel.update(n_examples=8, chunk=8)
    c.verdict.update(num_boot=200, max_excluded=1)
    c.exploratory.num_boot = 200
  return c
