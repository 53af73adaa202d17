"""`python -m experiments.figures`: PNGs from stored results.json files, skips the rest."""
import json
import shutil

import pytest

from experiments import figures

PNG = b"\x89PNG\r\n\x1a\n"


def lambda_sweep_results():
  """The fields of a lambda_sweep results.json that its figures read, as stored:
  the λ = 0 bound (inf) and a non-finite distance are JSON null."""
  per_lambda, table = [], []
  for lam, bound in ((0.0, None), (0.1, 3.0), (1.0, 0.9)):
    dist = [0.0, 0.2, 0.3, None if lam == 1.0 else 0.35, 0.36]
    per_lambda.append({"lam": lam, "bounds": {"distance": bound},
                       "per_step": {"nonlinear": {"distance": dist},
                                    "linearized": {"distance": [d and 1.01 * d for d in dist]}}})
    table.append({"lam": lam, "dist_nonlinear": 0.36, "bound": bound, "param_gap": 0.01,
                  "f_gap_train": 1e-3, "f_gap_eval": None, "remainder_est_train": 2e-3})
  return {"task": "sst2", "per_lambda": per_lambda, "table": table, "wall_seconds": 12.0}


@pytest.fixture(scope="module")
def stored_results(tmp_path_factory, ntk_spectra_run, perturbation_bounds_run):
  """<tmp>/results/<name>/results.json for lambda_sweep (synthetic) and for
  ntk_spectra, perturbation_bounds (the session's runs on a tiny random BERT,
  tests/experiments/conftest.py)."""
  results = tmp_path_factory.mktemp("figures") / "results"
  for name, (_, workdir, _) in (("ntk_spectra", ntk_spectra_run),
                                ("perturbation_bounds", perturbation_bounds_run)):
    (results / name).mkdir(parents=True)
    shutil.copy(workdir / "results.json", results / name / "results.json")
  (results / "lambda_sweep").mkdir()
  (results / "lambda_sweep" / "results.json").write_text(json.dumps(lambda_sweep_results()))
  return results


def test_regenerate_writes_pngs_and_skips_missing(stored_results, tmp_path, capsys):
  out = tmp_path / "figures"
  written = figures.regenerate(stored_results, out)
  assert list(written) == ["lambda_sweep", "ntk_spectra", "perturbation_bounds"]
  expected = {"lambda_sweep_distances.png", "lambda_sweep_gaps_vs_lambda.png", "ntk_spectra.png",
              "perturbation_bounds_bands.png", "perturbation_bounds_kappa.png"}
  assert {p.name for p in out.glob("*.png")} == expected
  for png in out.glob("*.png"):
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000, png
  printed = capsys.readouterr().out
  for name in ("spectrum_correlation", "selection_validation"):
    assert f"skip {name}: no stored results at {stored_results / name / 'results.json'}" \
        in printed
  index = (out / "index.md").read_text()
  for name in expected:
    assert f"]({name})" in index
  assert "notebooks/04_perturbation_bounds.ipynb" in index
  assert f"python -m experiments.figures --results={stored_results} --out={out}" in index
  assert "jax " in index    # the machine recorded by ntk_spectra / perturbation_bounds


def test_only_and_unknown(stored_results, tmp_path):
  written = figures.regenerate(stored_results, tmp_path, ["ntk_spectra"])
  assert list(written) == ["ntk_spectra"]
  assert [p.name for p in tmp_path.glob("*.png")] == ["ntk_spectra.png"]
  with pytest.raises(ValueError, match="unknown experiment"):
    figures.regenerate(stored_results, tmp_path, ["nope"])


def test_missing_module_is_skipped_other_import_errors_raise(tmp_path, monkeypatch, capsys):
  (tmp_path / "results" / "spectrum_correlation").mkdir(parents=True)
  (tmp_path / "results" / "spectrum_correlation" / "results.json").write_text("{}")

  def missing(results, outdir):
    raise ModuleNotFoundError("no module", name="experiments.spectrum_correlation")

  entry = figures.EXPERIMENTS["spectrum_correlation"]
  monkeypatch.setitem(figures.EXPERIMENTS, "spectrum_correlation", entry[:2] + (missing,))
  assert figures.regenerate(tmp_path / "results", tmp_path / "out",
                            ["spectrum_correlation"]) == {}
  assert "skip spectrum_correlation: experiments/spectrum_correlation.py not available" in \
      capsys.readouterr().out

  def broken(results, outdir):
    raise ModuleNotFoundError("no module", name="scipy")

  monkeypatch.setitem(figures.EXPERIMENTS, "spectrum_correlation", entry[:2] + (broken,))
  with pytest.raises(ModuleNotFoundError):
    figures.regenerate(tmp_path / "results", tmp_path / "out", ["spectrum_correlation"])
