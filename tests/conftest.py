"""Shared pytest setup: data locations, an XLA compilation cache for the modules that ask
(the `slow` marker is registered in pytest.ini)."""
import os
import pathlib

import pytest

from ntkft import xla_workarounds

# Before any JAX computation (idempotent: importing ntkft already applied it).
xla_workarounds.apply()

REPO = pathlib.Path(__file__).resolve().parent.parent
# The staged datasets live beside the checkout (../shared/data); override with NTKFT_DATA.
DATA_ROOT = pathlib.Path(os.environ.get("NTKFT_DATA", REPO.parent / "shared" / "data"))
GLUE_DIR = DATA_ROOT / "glue"
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture
def glue_dir():
  if not GLUE_DIR.is_dir():
    pytest.fail(f"GLUE data not found at {GLUE_DIR} (set NTKFT_DATA)")
  return GLUE_DIR


@pytest.fixture
def data_root():
  return DATA_ROOT


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
  """A persistent XLA compilation cache while the module that asks for it runs; yields its
  folder.

  Every program compiled in this process while the module runs is written there
  (``experiments.common.compilation_cache``: no minimum compile time or size), so a
  program compiled again by a fresh ``jax.jit`` — each run loaded from its workdir or
  run file, each rebuilt θ0 — is read back instead of compiled. The folder is one per
  process (per pytest-xdist worker), shared by every module that asks: a module also
  reads back the programs of the modules that ran before it in this process (the kappa
  and selection studies' tests compile the same kernel-point, prefix and train-step
  programs of their 6-layer BERT). Not shared between workers: JAX writes an entry
  without a lock, so a concurrent reader could see half of it. A cached program is the
  one compiled: results are unchanged. The global settings are restored after the
  module; a cache the user configured (``JAX_COMPILATION_CACHE_DIR``) is used instead.
  Ask for it where a module compiles the same program several times or the same
  programs as another module.
  """
  from experiments import common  # imports JAX: only once a module asks
  path = tmp_path_factory.getbasetemp() / "xla_cache_of_this_process"
  path.mkdir(exist_ok=True)
  with common.compilation_cache(path):
    yield path
