"""The run-directory contract: progress lines, STOP, checkpoints, atomic result."""

import json

from training.progress import Reporter, read_progress


def test_progress_lines_are_read_incrementally_and_partial_lines_wait(tmp_path):
    reporter = Reporter(tmp_path)
    reporter.log(1, 10, loss=0.5)
    lines, offset = read_progress(tmp_path)
    assert [(line["step"], line["total"], line["loss"]) for line in lines] == [
        (1, 10, 0.5)
    ]
    with open(tmp_path / "progress.jsonl", "a") as fh:
        fh.write('{"step": 2, "total"')
    lines, offset2 = read_progress(tmp_path, offset)
    assert lines == [] and offset2 == offset
    with open(tmp_path / "progress.jsonl", "a") as fh:
        fh.write(': 10, "time": 0}\n')
    lines, _ = read_progress(tmp_path, offset)
    assert [line["step"] for line in lines] == [2]


def test_stop_file_is_seen(tmp_path):
    reporter = Reporter(tmp_path)
    assert reporter.should_stop() is False
    (tmp_path / "STOP").touch()
    assert reporter.should_stop() is True


def test_last_checkpoint_is_the_highest_step(tmp_path):
    reporter = Reporter(tmp_path)
    assert reporter.last_checkpoint() is None
    for step in (5, 20, 10):
        with reporter.new_checkpoint(step) as folder:
            (folder / "state.json").write_text("{}")
    assert reporter.last_checkpoint().name == "checkpoint-20"
    assert sorted(p.name for p in reporter.checkpoint_dir.iterdir()) == [
        "checkpoint-10",
        "checkpoint-20",
        "checkpoint-5",
    ]


def half_saved(reporter: Reporter) -> None:
    """Leave what a stage killed while saving leaves: a checkpoint the Trainer wrote
    in place without its marker, and one of ours still under its temporary name."""
    with reporter.new_checkpoint(10) as folder:
        (folder / "state.json").write_text('{"step": 10}')
    (reporter.checkpoint_dir / "checkpoint-20").mkdir()
    (reporter.checkpoint_dir / "checkpoint-20" / "optimizer.pt").write_text("half")
    (reporter.checkpoint_dir / ".tmp-checkpoint-30").mkdir()


def test_resume_never_picks_a_half_written_checkpoint(tmp_path):
    reporter = Reporter(tmp_path)
    half_saved(reporter)

    assert reporter.last_checkpoint().name == "checkpoint-10"
    assert reporter.remove_incomplete_checkpoints() == [
        ".tmp-checkpoint-30",
        "checkpoint-20",
    ]
    assert [p.name for p in reporter.checkpoint_dir.iterdir()] == ["checkpoint-10"]


def test_a_checkpoint_is_renamed_into_place_only_when_whole(tmp_path):
    reporter = Reporter(tmp_path)
    with reporter.new_checkpoint(5) as folder:
        (folder / "state.json").write_text("{}")
        assert reporter.last_checkpoint() is None  # still under its temporary name
        assert not (reporter.checkpoint_dir / "checkpoint-5").exists()
    try:
        with reporter.new_checkpoint(6) as folder:
            raise OSError("disk full")
    except OSError:
        pass
    with reporter.new_checkpoint(5) as folder:  # the same step saved again
        (folder / "state.json").write_text('{"again": 1}')

    assert reporter.last_checkpoint().name == "checkpoint-5"
    assert [p.name for p in reporter.checkpoint_dir.iterdir()] == ["checkpoint-5"]
    assert (reporter.last_checkpoint() / "state.json").read_text() == '{"again": 1}'


def test_result_is_written_whole(tmp_path):
    Reporter(tmp_path).write_result({"loss": 0.25})
    assert json.loads((tmp_path / "result.json").read_text()) == {"loss": 0.25}
    assert not (tmp_path / "result.json.tmp").exists()


def test_a_result_keeps_a_list_of_numbers_as_a_list(tmp_path):
    import torch

    Reporter(tmp_path).write_result(
        {"score_shift": [0.5, torch.tensor(-1.5)], "other": object()}
    )
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["score_shift"] == [0.5, -1.5]
    assert isinstance(result["other"], str)
