"""ntkft's import graph is layered and acyclic (read with ast, nothing is imported).

Every module of ntkft belongs to a *unit*: its subpackage (``ntkft.ntk.engine`` ->
``ntk``, ``ntkft.theta0.kernels`` -> ``theta0``), the top-level module itself
(``ntkft.targets`` -> ``targets``), or, for a command module, the command
(``ntkft.select.cli`` -> ``select.cli``). Units are
stacked in ``LAYERS``, lowest first; a module may import units of its own layer
or of lower ones, never of a higher one, and neither the units nor the modules may
import each other in a circle. Lazy imports inside functions count like
top-level ones; the implicit import of a parent package does not.

The layers, lowest first (what each may use is everything below it):

  0. base            no ntkft imports: typing, xla_workarounds, records, config_lib,
                     cli (flag helpers), targets (labels -> targets)
  1. kernel math     spectral (eigenvalue statistics, alignment, the κ policy),
                     kernel (ridge, GD trajectory, classifiers on given kernels)
  2. model functions models (families, HF checkpoints, parameter blocks),
                     linearize (tangent model of an apply_fn)
  3. data            data (tasks, readers, batches), evals (GLUE metrics)
  4. ntk             kernels of an apply_fn
  5. peft            parameter subsets (kernel_subset uses ntk)
  6. θ0              theta0 (a config's model and trainable θ0; its kernels in
                     theta0.kernels and theta0.layer_sets)
  7. train           the pull, the step, the loop, warm runs
  8. studies' libraries diagnostics, select, merge
  9. commands        ``python -m`` entry points: run, sweep, ntk_report, kernel_fit,
                     export_peft, select.cli / select.__main__, merge.cli / merge.__main__

A new module of an existing subpackage joins its unit; a new subpackage or
top-level module must be placed in ``LAYERS`` (the test says so). A module
directly under ntkft/ is a base module (layer 0) or a command: library code
above the base lives in a subpackage, so the top level shows which is which.
"""
import ast
import collections
import pathlib

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "ntkft"

COMMANDS = ("run", "sweep", "ntk_report", "kernel_fit", "export_peft", "select.cli",
            "select.__main__", "merge.cli", "merge.__main__")
LAYERS = (
    ("ntkft", "typing", "xla_workarounds", "records", "config_lib", "cli", "targets"),
    ("spectral", "kernel"),
    ("models", "linearize"),
    ("data", "evals"),
    ("ntk",),
    ("peft",),
    ("theta0",),
    ("train",),
    ("diagnostics", "select", "merge"),
    COMMANDS,
)
LAYER_OF = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
# Top-level packages of the repository that ntkft must not import (they import ntkft).
OUTSIDE = ("configs", "experiments", "tests", "benchmarks", "tools", "notebooks")


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(REPO).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
  """The unit of a module: ``ntkft.ntk.engine`` -> ``ntk``, ``ntkft.select.cli`` -> itself."""
  if module == "ntkft":
    return "ntkft"
  name = module[len("ntkft."):]
  return name if name in COMMANDS else name.split(".")[0]


def imports_of(module: str, path: pathlib.Path, modules) -> list[tuple[str, int]]:
  """(imported name, line) of every import in the file, resolved to the deepest module.

  ``from ntkft.ntk import engine`` is the module ``ntkft.ntk.engine``;
  ``from ntkft.ntk import per_block_ntk_fn`` the package ``ntkft.ntk``.
  Names outside ntkft are returned as written (top-level name only matters).
  """
  package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
  out = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
      names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
               for a in node.names]
    else:
      continue
    for name in names:
      if name.split(".")[0] == "ntkft":
        while name not in modules and "." in name:
          name = name.rsplit(".", 1)[0]
      out.append((name, node.lineno))
  return out


def _graph():
  """{module: {imported ntkft module: first line}} and the outside imports."""
  modules = _modules()
  edges = collections.defaultdict(dict)
  outside = []
  for module, path in modules.items():
    for name, line in imports_of(module, path, modules):
      top = name.split(".")[0]
      if top == "ntkft":
        if name != module:
          edges[module].setdefault(name, line)
      elif top in OUTSIDE:
        outside.append(f"{module}:{line} imports {name}")
  return modules, edges, outside


def cycles(nodes, edges) -> list[list[str]]:
  """The strongly connected components with more than one node (Tarjan, iterative)."""
  index, low, on_stack, stack, out = {}, {}, set(), [], []
  for root in nodes:
    if root in index:
      continue
    work = [(root, iter(sorted(edges.get(root, ()))))]
    index[root] = low[root] = len(index)
    stack.append(root)
    on_stack.add(root)
    while work:
      v, children = work[-1]
      for w in children:
        if w not in index:
          index[w] = low[w] = len(index)
          stack.append(w)
          on_stack.add(w)
          work.append((w, iter(sorted(edges.get(w, ())))))
          break
        if w in on_stack:
          low[v] = min(low[v], index[w])
      else:
        work.pop()
        if work:
          low[work[-1][0]] = min(low[work[-1][0]], low[v])
        if low[v] == index[v]:
          component = []
          while True:
            w = stack.pop()
            on_stack.discard(w)
            component.append(w)
            if w == v:
              break
          if len(component) > 1:
            out.append(sorted(component))
  return out


def _unit_edges(edges) -> dict[str, dict[str, str]]:
  """{unit: {imported unit: 'module:line imports module'}} across units."""
  out = collections.defaultdict(dict)
  for module, targets in edges.items():
    for target, line in targets.items():
      a, b = unit_of(module), unit_of(target)
      if a != b:
        out[a].setdefault(b, f"{module}:{line} imports {target}")
  return out


def test_every_unit_has_a_layer():
  modules, _, _ = _graph()
  missing = sorted({unit_of(m) for m in modules} - set(LAYER_OF))
  assert not missing, f"place these ntkft units in LAYERS of {__file__}: {missing}"
  assert len(LAYER_OF) == sum(map(len, LAYERS)), "a unit is in two layers"


def test_top_level_modules_are_base_modules_or_commands():
  top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
  misplaced = [m for m in top if m not in LAYERS[0] and m not in COMMANDS]
  assert not misplaced, ("top-level ntkft modules that are neither base modules (layer 0) nor "
                         f"commands; move them into a subpackage: {misplaced}")


def test_no_import_from_a_lower_layer_to_a_higher_one():
  modules, edges, _ = _graph()
  upward = []
  for module, targets in sorted(edges.items()):
    for target, line in sorted(targets.items()):
      a, b = unit_of(module), unit_of(target)
      if a in LAYER_OF and b in LAYER_OF and LAYER_OF[b] > LAYER_OF[a]:
        upward.append(f"{module}:{line} imports {target} "
                      f"({a!r} is in layer {LAYER_OF[a]}, {b!r} in layer {LAYER_OF[b]})")
  assert not upward, "imports from a lower layer to a higher one:\n  " + "\n  ".join(upward)


def test_no_cycle_between_units():
  modules, edges, _ = _graph()
  unit_edges = _unit_edges(edges)
  found = cycles(sorted({unit_of(m) for m in modules}), unit_edges)
  detail = ["  " + " -> ".join(c) + ": " + "; ".join(
      unit_edges[a][b] for a in c for b in c if b in unit_edges.get(a, {})) for c in found]
  assert not found, "units importing each other in a circle:\n" + "\n".join(detail)


def test_no_cycle_between_modules():
  modules, edges, _ = _graph()
  found = cycles(sorted(modules), edges)
  assert not found, "modules importing each other in a circle (lazy imports included):\n" + \
      "\n".join("  " + " <-> ".join(c) for c in found)


def test_ntkft_imports_nothing_of_the_repository_outside_it():
  _, _, outside = _graph()
  assert not outside, "ntkft imports code that imports ntkft:\n  " + "\n  ".join(outside)


@pytest.mark.parametrize("edges,want", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
    ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
])
def test_cycles_finds_every_circle(edges, want):
  assert sorted(cycles(sorted(edges), edges)) == want


def test_imports_resolve_to_modules_and_packages(tmp_path):
  modules = {"ntkft", "ntkft.ntk", "ntkft.ntk.engine", "ntkft.ntk.empirical", "ntkft.train"}
  path = tmp_path / "empirical.py"
  path.write_text("import numpy as np\nfrom ntkft.ntk import engine, per_block_ntk_fn\n"
                  "from . import engine as e\nfrom .. import train\n"
                  "def f():\n  import ntkft.train\n")
  got = imports_of("ntkft.ntk.empirical", path, modules)
  assert got == [("numpy", 1), ("ntkft.ntk.engine", 2), ("ntkft.ntk", 2),
                 ("ntkft.ntk.engine", 3), ("ntkft.train", 4), ("ntkft.train", 6)]
