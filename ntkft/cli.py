"""The one command-line entry of every ntkft tool: absl flags, one-line errors.

Every program (``python -m ntkft.run``, ``ntkft.ntk_report``, ``ntkft.select``,
``ntkft.sweep``, ``ntkft.kernel_fit``, ``ntkft.export_peft``, ``experiments.*``; tested
in tests/cli_test.py) ends in :func:`run_main` (the
``--config=<file>[:args] --workdir=<dir>`` tools) or :func:`main` (tools with
their own flags). Flags are defined only when a tool runs as ``__main__``, never
at import time, so every tool's ``run(config, workdir)`` can be imported from
tests, notebooks and other tools in one process.

Errors. Any exception raised while parsing the flags or running the tool ends
the program with exactly one line on stderr and a non-zero exit status, no
traceback:

  error: <message>                     user errors, exit status 2 for bad flags
                                       (unknown flag or config field, a value of
                                       the wrong type, a missing required flag, a
                                       config file that does not load) and 1 for
                                       bad input found while running:
                                       ``ValueError``, ``KeyError``, ``OSError``
                                       (``FileNotFoundError``, ...),
                                       ``UsageError`` (ntkft raises these for bad
                                       settings, paths and data, naming what and
                                       where)
  error: <Type>: <message> (...)       anything else (a bug in ntkft or a
                                       dependency), exit status 1

``--verbose`` (or the environment variable ``NTKFT_VERBOSE=1``) shows the full
traceback instead. ``KeyboardInterrupt`` and ``SystemExit`` pass through.
"""
import os
import sys
from typing import Callable, Optional, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

# Exceptions that ntkft raises for bad input (settings, paths, data).
USER_ERRORS = (ValueError, KeyError, OSError, app.UsageError)
VERBOSE_ENV = "NTKFT_VERBOSE"


def define_flags() -> None:
  """Defines --config (locked ConfigDict from a file) and --workdir, once."""
  if "config" not in flags.FLAGS:
    config_flags.DEFINE_config_file("config", None, "Config file (path[:args]).",
                                    lock_config=True)
  if "workdir" not in flags.FLAGS:
    flags.DEFINE_string("workdir", None, "Output folder.")


def _define_verbose() -> None:
  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool("verbose", False,
                      f"Show the traceback of an error (also env {VERBOSE_ENV}=1).")


def _verbose(argv: Sequence[str]) -> bool:
  """--verbose on the command line (read before parsing: parsing may fail) or in the env."""
  if os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes"):
    return True
  if "verbose" in flags.FLAGS and flags.FLAGS["verbose"].present:
    return flags.FLAGS.verbose
  return any(a in ("--verbose", "--verbose=true", "--verbose=1", "--verbose=True")
             for a in argv)


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def _message(error: BaseException) -> str:
  """The text of an exception, without the quotes and wrapping KeyError adds."""
  while (isinstance(error, (KeyError, AttributeError)) and len(error.args) == 1
         and isinstance(error.args[0], BaseException)):
    error = error.args[0]  # ConfigDict: AttributeError(KeyError("'lrr'\nDid you mean ..."))
  if isinstance(error, KeyError) and len(error.args) == 1:
    text = str(error.args[0])
    return text.replace("'", "", 2) if text.startswith("'") else text
  text = str(error) or type(error).__name__
  if "Traceback (most recent call last)" in text:  # config_flags: a get_config() that raised
    head, _, trace = text.partition("Traceback (most recent call last)")
    text = head + trace.strip().splitlines()[-1]
  return text


def flag_error_message(error: BaseException, argv: Sequence[str]) -> str:
  """The one-line message of an exception raised while parsing ``argv``."""
  if isinstance(error, (KeyError, AttributeError)):
    # ml_collections: an override of a config field that does not exist.
    text = _message(error)
    field = text.split()[0] if text.split() else ""
    flag = next((a.split("=", 1)[0] for a in argv
                 if a.startswith("--config.") and field in a.split("=", 1)[0].split(".")),
                None)
    hint = " ".join(text.split()[1:])
    where = f"{flag}: " if flag else ""
    return _one_line(f"{where}no config field {field!r}" + (f" ({hint})" if hint else ""))
  return _one_line(_message(error))


def _fail(message: str, status: int) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(status)


def _config_files(argv: Sequence[str]) -> list[str]:
  """The paths of ``--config=path[:args]``."""
  return [a.split("=", 1)[1].split(":", 1)[0] for a in argv if a.startswith("--config=")]


def _parse(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, every failure as one ``error:`` line (status 2)."""
  try:
    for path in _config_files(argv):
      if not os.path.isfile(path):
        raise FileNotFoundError(f"--config: no config file {path}")
    return flags.FLAGS(list(argv))
  except Exception as e:  # pylint: disable=broad-except
    if _verbose(argv):
      raise
    _fail(flag_error_message(e, argv), 2)


def main(main_fn: Callable[[], object], required: Sequence[str] = (),
         argv: Optional[Sequence[str]] = None) -> None:
  """Parses the flags and calls ``main_fn()``, which reads ``flags.FLAGS``.

  Args:
    main_fn: the tool's body (define its flags before calling this).
    required: flag names that must be given.
    argv: the command line (default ``sys.argv``).

  Exits: 0 on success; prints one ``error:`` line and exits 2 (bad flags) or 1
  (a failure while running) otherwise, see the module docstring.
  """
  _define_verbose()
  if required:
    flags.mark_flags_as_required(list(required))
  argv = list(sys.argv if argv is None else argv)

  def body(rest):
    if len(rest) > 1:
      _fail(f"unexpected arguments: {rest[1:]}", 2)
    if not flags.FLAGS["verbosity"].present:
      logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:
      main_fn()
    except Exception as e:  # pylint: disable=broad-except
      if _verbose(argv):
        raise
      if isinstance(e, USER_ERRORS):
        _fail(_one_line(_message(e)), 1)
      _fail(_one_line(f"{type(e).__name__}: {_message(e)} "
                      "(an internal error: rerun with --verbose for the traceback)"), 1)

  app.run(body, argv=argv, flags_parser=_parse)


def run_main(run_fn: Callable[..., object]) -> None:
  """``run_fn(config, workdir)`` from ``--config`` and ``--workdir``; for ``__main__``."""
  define_flags()
  main(lambda: run_fn(flags.FLAGS.config, flags.FLAGS.workdir), required=("config", "workdir"))
