"""Every command-line entry point reports a user error as one ``error:`` line.

Each command fails before any model or data work (a bad flag, a bad config value
checked up front, a missing file), so the subprocesses cost an import each; they
run concurrently.
"""
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

W = "--workdir=/nonexistent/ntkft_cli_test"  # never created: every command fails first

# name -> (argv after `python`, text the error line must contain)
COMMANDS = {
    "run_unknown_field": (
        ["-m", "ntkft.run", "--config=configs/glue_linearized.py:runlocal",
         "--config.optim.lrr=1", W],
        "--config.optim.lrr: no config field 'lrr' (Did you mean \"lr\""),
    "run_missing_config_file": (
        ["-m", "ntkft.run", "--config=configs/nope.py", W], "no config file configs/nope.py"),
    "run_bad_config_arg": (
        ["-m", "ntkft.run", "--config=configs/glue_linearized.py:runlocal,tsk=rte", W],
        "unknown config argument 'tsk'"),
    "run_missing_workdir": (
        ["-m", "ntkft.run", "--config=configs/glue_linearized.py:runlocal"], "--workdir"),
    "ntk_report": (
        ["-m", "ntkft.ntk_report", "--config=configs/ntk_spectrum.py:runlocal",
         "--config.chunksize=4", W], "--config.chunksize: no config field"),
    "select": (
        ["-m", "ntkft.select", "--config=configs/select_layers.py:runlocal",
         "--config.criterion=best", W], "config.criterion='best'; choose from"),
    "sweep": (["-m", "ntkft.sweep", "--sweep=experiments/sweeps/nope.py", W],
              "sweep file experiments/sweeps/nope.py not found"),
    "figures": (["-m", "experiments.figures", "--only=nope"], "unknown experiment(s) ['nope']"),
    "kernel_fit": (
        ["-m", "ntkft.kernel_fit", "--config=configs/kernel_fit.py:runlocal",
         "--config.no_such_field=1", W], "--config.no_such_field: no config field"),
    "export_peft": (["-m", "ntkft.export_peft", W, "--out=/nonexistent/ntkft_cli_test_out"],
                    "no config.json in /nonexistent/ntkft_cli_test"),
    "merge": (["-m", "ntkft.merge", "--runs=/nonexistent/ntkft_cli_test", "--alpha=1",
               "--out=/nonexistent/ntkft_cli_test_out"],
              "no config.json in /nonexistent/ntkft_cli_test"),
    **{f"experiments.{name}": (
        ["-m", f"experiments.{name}", f"--config=configs/{name}.py:runlocal",
         "--config.no_such_field=1", W], "--config.no_such_field: no config field")
       for name in ("lambda_sweep", "ntk_spectra", "perturbation_bounds",
                    "selection_validation", "spectrum_correlation", "task_arithmetic")},
    "internal_error": (
        ["-c", "from ntkft import cli; cli.main(lambda: 1 / 0)"],
        "ZeroDivisionError: division by zero (an internal error: rerun with --verbose"),
}
VERBOSE = {  # the same failures with the traceback asked for
    "flag": ["-m", "ntkft.run", "--config=configs/glue_linearized.py:runlocal",
             "--config.optim.lrr=1", W, "--verbose"],
    "env": ["-m", "ntkft.sweep", "--sweep=experiments/sweeps/nope.py", W],
}


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k != "NTKFT_VERBOSE"}
  return dict(env, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), **extra)


@pytest.fixture(scope="module")
def results():
  """{name: CompletedProcess-like (returncode, stderr)} of COMMANDS and VERBOSE."""
  procs = {name: subprocess.Popen([sys.executable, *argv], cwd=REPO, env=_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for name, (argv, _) in COMMANDS.items()}
  procs.update({f"verbose_{name}": subprocess.Popen(
      [sys.executable, *argv], cwd=REPO,
      env=_env(NTKFT_VERBOSE="1") if name == "env" else _env(),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for name, argv in VERBOSE.items()})
  out = {}
  for name, proc in procs.items():
    _, stderr = proc.communicate(timeout=300)
    out[name] = (proc.returncode, stderr)
  return out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_user_error_is_one_line(results, name):
  returncode, stderr = results[name]
  assert returncode != 0, stderr
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
  assert COMMANDS[name][1] in lines[0]


def test_flag_errors_exit_2_and_runtime_errors_exit_1(results):
  assert results["run_unknown_field"][0] == 2 and results["run_missing_workdir"][0] == 2
  assert results["select"][0] == 1 and results["sweep"][0] == 1


@pytest.mark.parametrize("name", list(VERBOSE))
def test_verbose_shows_the_traceback(results, name):
  returncode, stderr = results[f"verbose_{name}"]
  assert returncode != 0
  assert "Traceback (most recent call last)" in stderr


def test_every_entry_point_goes_through_the_cli_helper():
  """Each ``__main__`` of ntkft/ and experiments/ ends in ntkft.cli (one error policy)."""
  mains = [p for folder in ("ntkft", "experiments") for p in sorted((REPO / folder).rglob("*.py"))
           if 'if __name__ == "__main__":' in p.read_text()]
  assert len(mains) >= 12
  for path in mains:
    block = path.read_text().split('if __name__ == "__main__":', 1)[1]
    assert "cli.run_main(" in block or "cli.main(" in block, path
