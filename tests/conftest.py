"""Shared pytest setup: data locations (the `slow` marker is registered in pytest.ini)."""
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
