"""Does linearized LoRA merge better than nonlinear LoRA? (issue 22, part 2)

  python -m experiments.task_arithmetic --config=configs/task_arithmetic.py[:runlocal] --workdir=W

The study of docs/preregistration_task_arithmetic.md as a resumable sweep of points
(configs/task_arithmetic.py), in this order:

* run point (task, mode, seed), seed-major, tasks in order, nonlinear then linearized
  per task: one ``ntkft.run`` (``ntkft.train.loop.run``) in ``W/runs/<id>/`` (git-ignored:
  its ~90 MB checkpoint is only a local cache), then ``W/points/<id>.npz``, the run file
  (``ntkft.merge.save_run``: θ_T and θ0 of the LoRA and head leaves, config, summary,
  digests of the frozen weights; ≈ 0.4 MB, committed) that every merge, ξ and kernel point
  reads, and ``W/points/<id>.json``: its dev metric and the chance level of its dev
  examples (the learned rule), its run ``config`` (a stored point or run folder of
  another config is refused, not reused), ``seconds`` (with the training of an
  earlier process when its summary is reused: ``resumed_from_summary``);
* once every run point exists (no merge sees dev before), per seed and mode: the
  merge point (task addition over every planned subset with α chosen on the
  validation examples, TIES and negation of ``negation.task``; linearized: a check
  of the tangent sums against ``ntkft.merge``'s model on the all-task merge), then
  the ξ point where planned (every pair's ξ(α1, α2) grid);
* per seed, the kernel point (energies of each task's θ0 kernel in the others' top
  eigenspaces, ``ntkft.merge.localization``).

Every point writes ``W/points/<id>.json`` atomically when done (a run point after its
run file) and is skipped when that file exists (``max_run_points`` stops once that many
run points exist: 12 is seed 0, for §5's projection ``run_seconds_projected``; a missing
data file is refused before the first point), so a sweep resumes from the committed
points on a fresh clone, without ``W/runs/``; a failed run (non-finite loss) is kept as
a point (no run file) and not rerun, and the merges of its mode and seed are recorded
as not computed. ``W/results.json``
is written when the process ends (all done, ``max_seconds`` reached, or
``--config.collect_only``): ``runs`` (task, mode, seed, dev_metric, seconds, ...),
``merges`` (one row per method, mode, seed, subset and task), ``negation``, ``xi``,
``kernels``, ``verdict`` (hypothesis H, ``experiments.task_arithmetic_analysis``)
and ``exploratory``.
"""
import itertools
import json
import pathlib
import time

import numpy as np

from configs import glue_common
from experiments import common
from experiments import task_arithmetic_analysis as analysis
from ntkft import cli, config_lib, data, merge, records
from ntkft.models import resolve_model_dir
from ntkft.train import loop
from ntkft.train import step as step_lib


def run_id(task, mode, seed) -> str:
  return f"run_{task}_{mode}_s{seed}"


def merge_id(mode, seed) -> str:
  return f"merge_{mode}_s{seed}"


def xi_id(mode, seed) -> str:
  return f"xi_{mode}_s{seed}"


def kernel_id(seed) -> str:
  return f"kernel_s{seed}"


def run_file(workdir: pathlib.Path, point_id: str) -> pathlib.Path:
  """The run file of a run point: what its merges read (``ntkft.merge.load_run``)."""
  return workdir / "points" / f"{point_id}.npz"


def check(config) -> None:
  """Refuses settings the study cannot run, before anything is computed (one line each)."""
  tasks = common.parse_tasks(config.tasks)
  if tuple(config.tasks) != tasks:
    raise ValueError(f"config.tasks={tuple(config.tasks)}: use canonical names {tasks}")
  if len(tasks) < 2:
    raise ValueError(f"config.tasks={tasks}: merging needs at least 2 tasks")
  bad = [m for m in config.modes if m not in step_lib.MODES]
  if bad or not config.modes:
    raise ValueError(f"config.modes={tuple(config.modes)}: choose from {step_lib.MODES}")
  if config.negation.task not in tasks:
    raise ValueError(f"config.negation.task={config.negation.task!r} is not in config.tasks")
  for mode in ("nonlinear", "linearized"):
    extra = sorted(set(config.xi[f"{mode}_seeds"]) - set(config.seeds))
    if extra:
      raise ValueError(f"config.xi.{mode}_seeds has seeds {extra} not in config.seeds")
  extra = sorted(set(config.xi.nonlinear_tasks) - set(tasks))
  if extra:
    raise ValueError(f"config.xi.nonlinear_tasks has {extra}, not in config.tasks")
  for name, values in (("alphas", config.alphas), ("ties.alphas", config.ties.alphas),
                       ("negation.alphas", config.negation.alphas), ("xi.grid", config.xi.grid)):
    if not len(values):
      raise ValueError(f"config.{name} is empty")


def check_data(config) -> None:
  """Refuses a missing data file before any point runs (one line naming the file), rather
  than hours later at the first run or merge of that task: the train and eval splits of
  every task, where its runs read them."""
  for t in config.tasks:
    c = run_config(config, t, config.modes[0], config.seeds[0])
    task = data.get_task(t)
    folder = loop.data_dir_for(task, c.data.root, c.data.kshot)
    for split in (c.data.train_split, c.data.eval_split):
      data.resolve_path(task, split, folder)


def config_json(c) -> dict:
  """A run config as its ``config.json`` holds it (``ntkft.train.loop.run`` writes it)."""
  return json.loads(c.to_json_best_effort())


def first_difference(stored, want, prefix: str = "") -> str | None:
  """The first dotted key (sorted) where two JSON trees differ, as "key: stored vs want";
  None if they are equal."""
  if isinstance(stored, dict) and isinstance(want, dict):
    for key in sorted(set(stored) | set(want)):
      name = f"{prefix}{key}"
      if key not in stored or key not in want:
        return f"{name}: {stored.get(key, '(absent)')!r} vs {want.get(key, '(absent)')!r}"
      diff = first_difference(stored[key], want[key], name + ".")
      if diff:
        return diff
    return None
  return None if stored == want else f"{prefix.rstrip('.')}: {stored!r} vs {want!r}"


def check_stored_runs(config, workdir: pathlib.Path) -> None:
  """Refuses run points stored under another run config than the current one (e.g. a
  §5 step reduction with seed 0's old points left in place), naming the first field."""
  for p in points(config):
    path = workdir / "points" / f"{p['id']}.json"
    if p["kind"] != "run" or not path.exists():
      continue
    stored = json.loads(path.read_text()).get("config")
    if stored is None:
      continue
    diff = first_difference(stored, config_json(run_config(config, p["task"], p["mode"],
                                                           p["seed"])))
    if diff:
      raise ValueError(f"{path} was computed under another run config ({diff}, stored vs "
                       "now): delete it, its .npz and runs/" + p["id"] + " to recompute it")


def subsets(config) -> list[tuple[str, ...]]:
  """The task-addition subsets (§1): every pair, per_k drawn subsets for each 2 < k < T
  (one ``np.random.default_rng(subsets.seed)``, k ascending, indices into the lexicographic
  list of k-subsets of the task order, kept in that order), and all T tasks."""
  tasks = tuple(config.tasks)
  rng = np.random.default_rng(config.subsets.seed)
  out = list(itertools.combinations(tasks, 2))
  for k in range(3, len(tasks)):
    every = list(itertools.combinations(tasks, k))
    count = min(config.subsets.per_k, len(every))
    out += [every[i] for i in sorted(rng.choice(len(every), size=count, replace=False))]
  if len(tasks) > 2:
    out.append(tasks)
  return out


def ties_subsets(config) -> list[tuple[str, ...]]:
  """TIES (§4): all tasks, then every pair (``ties.pairs``)."""
  tasks = tuple(config.tasks)
  pairs = list(itertools.combinations(tasks, 2)) if config.ties.pairs else []
  return [tasks] + [p for p in pairs if p != tasks]


def xi_pairs(config, mode) -> list[tuple[str, str]]:
  tasks = tuple(config.xi.nonlinear_tasks) if mode == "nonlinear" else ()
  return list(itertools.combinations(tasks or tuple(config.tasks), 2))


def points(config) -> list[dict]:
  """Every point in execution order (§5: runs seed-major, then merges and ξ, then kernels)."""
  out = [dict(kind="run", id=run_id(t, m, s), task=t, mode=m, seed=int(s))
         for s in config.seeds for t in config.tasks for m in config.modes]
  for s in config.seeds:
    for m in config.modes:
      out.append(dict(kind="merge", id=merge_id(m, s), mode=m, seed=int(s)))
      if s in config.xi[f"{m}_seeds"]:
        out.append(dict(kind="xi", id=xi_id(m, s), mode=m, seed=int(s)))
  out += [dict(kind="kernel", id=kernel_id(s), seed=int(s)) for s in config.seeds]
  return out


def run_config(config, task, mode, seed):
  """The configs/glue_common.py config of one run."""
  c = glue_common.get_config(f"task={task}", mode=mode)
  c = config_lib.with_overrides(c, config.finetune.to_dict(), "task_arithmetic finetune")
  c.seed = int(seed)
  return c


def write_json(path: pathlib.Path, obj) -> None:
  """``records.write_json`` through a temporary file: a point file is complete or absent."""
  tmp = path.with_suffix(".tmp")
  records.write_json(tmp, obj)
  tmp.replace(path)


# -- Run points ----------------------------------------------------------------------------------

def run_point(config, point, workdir: pathlib.Path) -> dict:
  """One fine-tuning run (resumed if its workdir holds a summary), its run file (written
  before the caller writes the point's JSON), its dev metric and chance."""
  t0 = time.time()
  c = run_config(config, point["task"], point["mode"], point["seed"])
  want = config_json(c)
  run_dir = workdir / "runs" / point["id"]
  if (run_dir / "config.json").exists():  # a finished or partial run is reused: same config?
    diff = first_difference(json.loads((run_dir / "config.json").read_text()), want)
    if diff:
      raise ValueError(f"{run_dir} holds a run of another config ({diff}, stored vs now): "
                       "delete it to rerun " + point["id"])
  summary = records.finished_summary(run_dir)
  resumed = summary is not None  # trained by an earlier process: count its wall time
  try:
    summary = summary or loop.run(c, str(run_dir))
  except loop.NonFiniteLossError as e:  # kept, reported, not rerun (§5)
    return {"failed": str(e), "config": want, "seconds": time.time() - t0}
  merge.save_run(merge.load_run(run_dir), run_file(workdir, point["id"]))
  task = data.get_task(c.task)
  _, dev, _ = loop.load_data(c, task, data.load_tokenizer(resolve_model_dir(c.model.name)))
  return {"dev_metric": summary["dev_metric"], "dev_metric_name": summary["dev_metric_name"],
          "dev_metrics": summary["dev_metrics"], "train_loss": summary["train_loss"],
          "param_distance": summary["param_distance"], "n_train": summary["n_train"],
          "n_eval": summary["n_eval"], "chance": analysis.chance_level(task.name, dev.labels),
          "run_wall_seconds": summary["wall_seconds"], "config": want,
          "resumed_from_summary": resumed,
          "seconds": time.time() - t0 + (summary["wall_seconds"] if resumed else 0.0)}


# -- Merge, ξ and kernel points ------------------------------------------------------------------

def first(encoded: data.Encoded, n: int) -> data.Encoded:
  """The first n examples (file order) of an encoded split."""
  return data.Encoded(encoded.input_ids[:n], encoded.token_type_ids[:n], encoded.labels[:n],
                      encoded.lengths[:n], encoded.pad_id)


def load_group(config, workdir: pathlib.Path, mode: str, seed: int):
  """(MergedOutputs over the τ of every task, runs) of one mode and seed, with the example
  sets "val" (held-out train), "dev" (the runs' own) and "xi" (first of dev); or a string
  saying why not (a failed run)."""
  ids = [run_id(t, mode, seed) for t in config.tasks]
  failed = [i for i in ids if "failed" in json.loads((workdir / "points" / f"{i}.json")
                                                      .read_text())]
  if failed:
    return f"not computed: run(s) {failed} failed"
  runs = dict(zip(config.tasks, merge.load_runs([run_file(workdir, i) for i in ids])))
  examples = {}
  for t, r in runs.items():
    dev = merge.dev_set(r)
    examples[t] = {"val": merge.validation_set(r, config.validation.n,
                                               [config.validation.seed_base, seed]),
                   "dev": dev, "xi": first(dev, config.xi.n_examples)}
  taus = {t: merge.run_task_vector(r) for t, r in runs.items()}
  return merge.MergedOutputs(runs, taus, examples), runs


def _choose(config, outs, subset, coefs_at, grid, single_val):
  """(α*, [score(α)]): the best mean normalized validation metric over ``subset``."""
  scores = [float(np.mean([merge.normalized(outs.metric(t, coefs_at(a), "val"), single_val[t],
                                            config.normalizer_floor) for t in subset]))
            for a in grid]
  return merge.best_alpha(grid, scores), scores


def _dev_rows(outs, subset, coefs, single_dev) -> dict:
  out = {}
  for t in subset:
    m = outs.metric(t, coefs, "dev")
    out[t] = {"dev_metric": m, "normalized": m / single_dev[t] if single_dev[t] > 0 else None}
  return out


def merge_point(config, group) -> dict:
  """Task addition (every subset), TIES and negation of one mode and seed (§1, §4)."""
  if isinstance(group, str):
    return {"skipped": group, "seconds": 0.0}
  t0 = time.time()
  outs, runs = group
  tasks = list(config.tasks)
  single_val = {t: outs.metric(t, {t: 1.0}, "val") for t in tasks}
  single_dev = {t: runs[t].summary["dev_metric"] for t in tasks}
  addition, ties = [], []
  for subset in subsets(config):
    alpha, scores = _choose(config, outs, subset, lambda a, s=subset: {t: a for t in s},
                            config.alphas, single_val)
    addition.append({"subset": list(subset), "alpha": alpha, "val_scores": scores,
                     "tasks": _dev_rows(outs, subset, {t: alpha for t in subset}, single_dev)})
  for subset in ties_subsets(config):
    name = "ties:" + "+".join(subset)
    outs.add_vector(name, merge.ties_merge([outs.vectors[t] for t in subset], config.ties.k))
    alpha, scores = _choose(config, outs, subset, lambda a, n=name: {n: a}, config.ties.alphas,
                            single_val)
    ties.append({"subset": list(subset), "alpha": alpha, "val_scores": scores,
                 "tasks": _dev_rows(outs, subset, {name: alpha}, single_dev)})
  neg = config.negation
  controls = [t for t in tasks if t != neg.task]
  control_scores = [
      float(np.mean([merge.normalized(outs.metric(t, {t: 1.0, neg.task: -a}, "val"),
                                      single_val[t], config.normalizer_floor) for t in controls]))
      for a in neg.alphas]
  alpha = merge.negation_alpha(neg.alphas, control_scores, neg.control_min)
  rows = {t: _dev_rows(outs, [t], {t: 1.0, neg.task: -alpha}, single_dev)[t] for t in controls}
  negation = {"task": neg.task, "alpha": alpha, "val_control_scores": control_scores,
              "dev_target": outs.metric(neg.task, {neg.task: -alpha}, "dev"),
              "dev_target_single": single_dev[neg.task], "controls": rows}
  out = {"single_val": single_val, "single_dev": single_dev, "addition": addition,
         "ties": ties, "negation": negation, "linear_check": None}
  if outs.mode == "linearized":  # §5: the tangent sums against the merged model, once per seed
    last = addition[-1]
    coefs = {t: last["alpha"] for t in last["subset"]}
    out["linear_check"] = linear_check(outs, last["subset"], coefs, config.linear_check_tol)
  out["seconds"] = time.time() - t0
  return out


def linear_check(outs, subset, coefs, tol) -> dict:
  """max |tangent sum − the merged tangent model| on dev per task; raises above tolerance."""
  diffs = {}
  for t in subset:
    want = outs.forward(t, coefs, "dev")
    diff = float(np.abs(outs(t, coefs, "dev") - want).max())
    scale = max(1.0, float(np.abs(want).max()))
    diffs[t] = diff
    if diff > tol * scale:
      raise ValueError(f"linear check: task {t}'s tangent sum differs from the merged tangent "
                       f"model by {diff:.3g} (> {tol} × {scale:.3g}) at {coefs}")
  return {"subset": list(subset), "coefs": dict(coefs), "max_abs_diff": diffs}


def xi_point(config, group, mode) -> dict:
  """ξ(α1, α2) on the grid for every pair of one mode and seed (§2), on the "xi" examples."""
  if isinstance(group, str):
    return {"skipped": group, "seconds": 0.0}
  t0 = time.time()
  outs, runs = group
  grid = [float(a) for a in config.xi.grid]
  tol = config.xi.regression_tol
  pairs = []
  for t1, t2 in xi_pairs(config, mode):
    reg = [runs[t1].task.is_regression, runs[t2].task.is_regression]
    xi = np.zeros((len(grid), len(grid)))
    for (i, a1), (j, a2) in itertools.product(enumerate(grid), enumerate(grid)):
      if a1 == 0 and a2 == 0:
        continue  # both terms are the model at φ0: ξ(0, 0) = 0
      both = {t1: a1, t2: a2}
      xi[i, j] = merge.disentanglement_error(
          [outs(t1, {t1: a1}, "xi"), outs(t2, {t2: a2}, "xi")],
          [outs(t1, both, "xi"), outs(t2, both, "xi")], reg, tol)
    pairs.append({"tasks": [t1, t2], "xi": xi, "mean_xi": merge.mean_off_origin(grid, xi)})
  return {"grid": grid, "n_examples": config.xi.n_examples, "pairs": pairs,
          "seconds": time.time() - t0}


def kernel_point(config, workdir: pathlib.Path, seed: int) -> dict:
  """Energies E(t | s) of the θ0 kernels on each task's kernel examples (§4)."""
  t0 = time.time()
  mode = config.modes[0]  # θ0 is the same for both modes of a seed
  ids = [run_id(t, mode, seed) for t in config.tasks]
  failed = [i for i in ids if "failed" in json.loads((workdir / "points" / f"{i}.json")
                                                      .read_text())]
  if failed:
    return {"skipped": f"not computed: run(s) {failed} failed", "seconds": 0.0}
  runs = merge.load_runs([run_file(workdir, i) for i in ids])
  jac = {t: merge.shared_jacobian(r, first(merge.dev_set(r), config.kernel.n_examples),
                                  config.kernel.chunk)
         for t, r in zip(config.tasks, runs)}
  return {**merge.energies(jac, config.kernel.energy), "n_examples": config.kernel.n_examples,
          "num_params": int(next(iter(jac.values())).shape[1]), "seconds": time.time() - t0}


# -- The sweep -----------------------------------------------------------------------------------

def collect(config, workdir: pathlib.Path, seconds: float) -> dict:
  """results.json from every finished point (partial while points are missing)."""
  plan = points(config)
  done = {p["id"]: json.loads((workdir / "points" / f"{p['id']}.json").read_text())
          for p in plan if (workdir / "points" / f"{p['id']}.json").exists()}
  lr = config.learned
  runs, rows, negations, xis, kernels, checks, skipped = [], [], [], [], [], [], []
  for p in plan:
    rec = done.get(p["id"])
    if rec is None:
      continue
    if "skipped" in rec or "failed" in rec:
      skipped.append({"id": p["id"], "why": rec.get("skipped") or rec.get("failed")})
    if p["kind"] == "run":
      runs.append({"task": p["task"], "mode": p["mode"], "seed": p["seed"],
                   "dev_metric": rec.get("dev_metric"), "seconds": rec["seconds"],
                   "dev_metric_name": rec.get("dev_metric_name"), "chance": rec.get("chance"),
                   "failed": rec.get("failed"),
                   "learned": analysis.learned(rec.get("dev_metric_name"), rec.get("dev_metric"),
                                               rec.get("chance"), lr.margin, lr.min_correlation)})
    elif p["kind"] == "merge" and "skipped" not in rec:
      for method in ("addition", "ties"):
        for entry in rec[method]:
          for task, r in entry["tasks"].items():
            rows.append({"method": method, "mode": p["mode"], "seed": p["seed"],
                         "k": len(entry["subset"]), "subset": entry["subset"], "task": task,
                         "alpha": entry["alpha"], "dev_metric": r["dev_metric"],
                         "normalized": r["normalized"],
                         "single_dev_metric": rec["single_dev"][task]})
      n = rec["negation"]
      normalized = [c["normalized"] for c in n["controls"].values()]
      negations.append({"mode": p["mode"], "seed": p["seed"], "task": n["task"],
                        "alpha": n["alpha"], "dev_target": n["dev_target"],
                        "dev_target_single": n["dev_target_single"], "controls": n["controls"],
                        "control_normalized": (float(np.mean(normalized))
                                               if None not in normalized else None)})
      if rec["linear_check"]:
        checks.append({"seed": p["seed"], **rec["linear_check"]})
    elif p["kind"] == "xi" and "skipped" not in rec:
      xis += [{"mode": p["mode"], "seed": p["seed"], "grid": rec["grid"], **pair}
              for pair in rec["pairs"]]
    elif p["kind"] == "kernel" and "skipped" not in rec:
      kernels.append({"seed": p["seed"], **rec})
  seconds_of = lambda kind: sum(done[p["id"]]["seconds"] for p in plan
                                if p["kind"] == kind and p["id"] in done)
  return {"experiment": "task_arithmetic",
          "preregistration": "docs/preregistration_task_arithmetic.md",
          **records.provenance(config), "points_done": len(done), "points_total": len(plan),
          "complete": len(done) == len(plan), "skipped": skipped,
          **{f"{kind}_seconds": seconds_of(kind) for kind in ("run", "merge", "xi", "kernel")},
          "run_seconds_projected": analysis.projected_run_seconds(config, runs),
          "wall_seconds_this_session": seconds, "runs": runs, "merges": rows,
          "negation": negations, "xi": xis, "kernels": kernels, "linear_checks": checks,
          "verdict": analysis.confirmatory(config, runs, rows),
          "exploratory": analysis.exploratory(config, rows, negations, xis, kernels)}


def run(config, workdir: str) -> dict:
  """Runs missing points (until ``config.max_seconds``), then writes results.json."""
  t0 = time.time()
  check(config)
  workdir = pathlib.Path(workdir)
  (workdir / "points").mkdir(parents=True, exist_ok=True)
  check_stored_runs(config, workdir)
  plan = [] if config.collect_only else points(config)
  path = lambda p: workdir / "points" / f"{p['id']}.json"
  if any(not path(p).exists() for p in plan):
    check_data(config)
  late = lambda: bool(config.max_seconds) and time.time() - t0 > config.max_seconds
  runs_done = lambda: sum(path(p).exists() for p in plan if p["kind"] == "run")
  enough_runs = lambda: bool(config.max_run_points) and runs_done() >= config.max_run_points

  def announce(p):
    print(f"[{plan.index(p) + 1}/{len(plan)}] {p['id']}", flush=True)

  with common.compilation_cache(workdir / "xla_cache" if config.xla_cache else None):
    for p in (p for p in plan if p["kind"] == "run" and not path(p).exists()):
      if late() or enough_runs():
        break
      announce(p)
      write_json(path(p), run_point(config, p, workdir))
    if all(path(p).exists() for p in plan if p["kind"] == "run"):  # merges only after all runs
      merging = [p for p in plan if p["kind"] in ("merge", "xi")]
      for (mode, seed), group_points in itertools.groupby(merging,
                                                          lambda p: (p["mode"], p["seed"])):
        todo = [p for p in group_points if not path(p).exists()]
        if not todo or late():
          continue
        t_load = time.time()
        group = load_group(config, workdir, mode, seed)
        load_seconds = time.time() - t_load  # counted in the first point computed
        for p in todo:
          if late():
            break
          announce(p)
          out = (merge_point(config, group) if p["kind"] == "merge"
                 else xi_point(config, group, mode))
          out["load_seconds"], load_seconds = load_seconds, 0.0
          out["seconds"] += out["load_seconds"]
          write_json(path(p), out)
        del group
      for p in (p for p in plan if p["kind"] == "kernel" and not path(p).exists()):
        if late():
          break
        announce(p)
        write_json(path(p), kernel_point(config, workdir, p["seed"]))
  results = collect(config, workdir, time.time() - t0)
  write_json(workdir / "results.json", results)
  proj = results["run_seconds_projected"]
  print(f"run points: {len(results['runs'])} done, {results['run_seconds']:.0f} s; all "
        f"{len(config.tasks) * len(config.modes) * len(config.seeds)} projected "
        + ("n/a" if proj is None else f"{proj:.0f} s") + " (§5)")
  v = results["verdict"]
  est = "n/a" if v["estimate"] is None else f"{v['estimate']:.4f}"
  print(f"H: estimate {est} CI {v['ci']} -> {v['verdict']} ({v['reason']})")
  return results


if __name__ == "__main__":
  cli.run_main(run)
