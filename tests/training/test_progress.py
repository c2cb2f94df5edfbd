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
        (tmp_path / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
    assert reporter.last_checkpoint().name == "checkpoint-20"


def test_result_is_written_whole(tmp_path):
    Reporter(tmp_path).write_result({"loss": 0.25})
    assert json.loads((tmp_path / "result.json").read_text()) == {"loss": 0.25}
    assert not (tmp_path / "result.json.tmp").exists()
