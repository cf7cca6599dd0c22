"""One meaning per name: the trainer's monitor logs `*_at_visit` (metrics keys, TensorBoard tags, compare columns),
the toy `*_at_epoch_end`; runs logged before the rename (`forgetting_events`, ...) still read in `memloss compare`."""

from pathlib import Path

from memloss.trainer.experiments.compare.collect import Run
from memloss.trainer.experiments.compare.table import run_metrics
from memloss.trainer.training.logbook import tag_of
from memloss.trainer.training.monitor_keys import MONITOR_KEYS, upgrade_record

OLD_RECORD = {"epoch": 2, "test_clean_acc": 0.5, "test_pgd20_acc": 0.3, "loss": 1.0, "epoch_seconds": 6.0,
              "forgetting_events": 0.1, "learning_events": 0.05, "old_error": 0.4, "old_error_by_age": [0.4, 0.5]}


def test_old_keys_are_renamed_and_new_records_untouched() -> None:
    new = upgrade_record(OLD_RECORD)
    assert (new["forget_at_visit"], new["learn_at_visit"], new["old_error_at_visit"]) == (0.1, 0.05, 0.4)
    assert new["old_error_at_visit_by_age"] == [0.4, 0.5]
    assert not {"forgetting_events", "learning_events", "old_error", "old_error_by_age"} & set(new)
    assert upgrade_record(new) == new and OLD_RECORD["forgetting_events"] == 0.1  # the input is not modified


def test_compare_reads_an_old_run_under_the_new_columns(tmp_path: Path) -> None:
    run = Run(tmp_path, {}, 0, [upgrade_record(OLD_RECORD)], {})
    metrics = run_metrics(run)
    assert metrics["final forget at visit"] == 0.1 and metrics["final old error at visit"] == 0.4


def test_tensorboard_tags_of_the_monitor() -> None:
    assert [tag_of(k) for k in MONITOR_KEYS] == ["memory/forget_at_visit", "memory/learn_at_visit",
                                                  "memory/old_error_at_visit"]
    assert tag_of("forget_at_visit_by_age") == "memory/forget_at_visit_by_age"
