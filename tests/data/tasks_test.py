"""Tests for ntkft.data.tasks."""

import pytest

from ntkft.data import tasks

CANONICAL = (
    "cola",
    "sst2",
    "mrpc",
    "stsb",
    "qqp",
    "mnli",
    "qnli",
    "rte",
    "wnli",
    "imdb",
    "yelp",
)


def test_registry_has_exactly_the_canonical_tasks():
  assert tuple(tasks.TASKS) == CANONICAL
  for name, spec in tasks.TASKS.items():
    assert spec.name == name
    assert spec.primary_metric in spec.metrics
    assert len(spec.raw_labels) == len(spec.label_names)
    if spec.is_regression:
      assert spec.num_labels == 1 and spec.label_names == ()
    else:
      assert spec.num_labels == len(spec.label_names) >= 2


@pytest.mark.parametrize(
    "alias,name",
    [
        ("SST-2", "sst2"),
        ("sst-2", "sst2"),
        ("sts-b", "stsb"),
        ("STS-B", "stsb"),
        ("CoLA", "cola"),
        ("MNLI", "mnli"),
        ("yelp_full", "yelp"),
        ("imdb", "imdb"),
    ],
)
def test_aliases(alias, name):
  assert tasks.get_task(alias) is tasks.TASKS[name]


def test_unknown_task_lists_valid_names():
  with pytest.raises(ValueError, match="unknown task 'sst5'.*cola, sst2"):
    tasks.get_task("sst5")


def test_split_files():
  assert tasks.get_task("mnli").file_name("dev") == "dev_matched.tsv"
  assert (
      tasks.get_task("mnli").file_name("dev_mismatched") == "dev_mismatched.tsv"
  )
  assert tasks.get_task("imdb").file_name("dev") == "test.jsonl"
  assert tasks.get_task("yelp").file_name("test") == "test.jsonl"
  assert tasks.get_task("rte").file_name("train") == "train.tsv"
  with pytest.raises(ValueError, match="no split 'validation'.*train, dev"):
    tasks.get_task("rte").file_name("validation")


def test_mnli_evaluates_matched_with_mismatched():
  mnli = tasks.get_task("mnli")
  for split, mismatched in (("dev", "dev_mismatched"), ("dev_matched", "dev_mismatched"),
                            ("test", "test_mismatched")):
    assert mnli.mismatched_split(split) == mismatched
    assert mnli.file_name(mismatched) == mismatched + ".tsv"
  assert mnli.mismatched_split("train") is None
  for name in tasks.TASKS:
    if name != "mnli":
      assert tasks.get_task(name).mismatched_split("dev") is None


def test_label_orders_follow_glue_convention():
  assert tasks.TASKS["mnli"].label_names == (
      "entailment",
      "neutral",
      "contradiction",
  )
  assert tasks.TASKS["wnli"].label_names[1] == "entailment"
  assert tasks.TASKS["cola"].metrics == ("matthews",)
  assert tasks.TASKS["stsb"].metrics == ("pearson", "spearman")
  assert tasks.TASKS["mrpc"].metrics == ("accuracy", "f1")
  assert tasks.TASKS["stsb"].is_pair and not tasks.TASKS["sst2"].is_pair
