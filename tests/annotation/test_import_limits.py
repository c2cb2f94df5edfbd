"""Imports are capped in records, bytes and decompression ratio, read as a stream."""

from __future__ import annotations

import gzip
import json
import random
import re
import string
import tracemalloc
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from annotation.importing import parse_file

ROW = {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}


def _jsonl(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps(ROW) + "\n" for _ in range(n)))
    return path


def test_a_small_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    bomb = tmp_path / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as out:
        chunk = b"\n" * (1 << 20)
        for _ in range(200):  # 200 MiB of blank lines from about 200 KB
            out.write(chunk)
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ValidationError, match="decompress") as caught:
            parse_file(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "bomb.jsonl.gz" in str(caught.value)
    assert peak < 48 << 20


def test_a_line_without_end_is_refused_before_it_fills_memory(tmp_path, settings):
    settings.IMPORT_MAX_LINE_BYTES = 1000
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({**ROW, "chosen": "x" * 5000}) + "\n")
    with pytest.raises(ValidationError, match="line 1 is longer than 1000 bytes"):
        parse_file(path)


def test_more_records_than_the_cap_are_refused_naming_it(tmp_path, settings):
    settings.IMPORT_MAX_RECORDS = 3
    with pytest.raises(ValidationError, match="more than 3 records"):
        parse_file(_jsonl(tmp_path / "many.jsonl", 5))
    assert len(parse_file(_jsonl(tmp_path / "few.jsonl", 3)).records) == 3


def test_more_bytes_than_the_cap_are_refused_naming_it(tmp_path, settings):
    settings.IMPORT_MAX_BYTES = 500
    with pytest.raises(ValidationError, match="more than 500 bytes"):
        parse_file(_jsonl(tmp_path / "big.jsonl", 20))


def test_parquet_over_the_caps_is_refused_from_its_footer(tmp_path, settings):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([ROW] * 10), path, row_group_size=2)
    assert len(parse_file(path).records) == 10
    settings.IMPORT_MAX_RECORDS = 4
    with pytest.raises(ValidationError, match="more than 4 records"):
        parse_file(path)
    settings.IMPORT_MAX_RECORDS = 100
    settings.IMPORT_MAX_BYTES = 50
    with pytest.raises(ValidationError, match="more than 50 bytes"):
        parse_file(path)


@pytest.mark.parametrize("kind", ["jsonl", "gzip", "parquet"])
def test_reading_reports_its_progress_up_to_the_whole_file(tmp_path, kind):
    # Random texts: a gzip of them is as big as a real file's, not a few blocks.
    rng = random.Random(0)
    rows = [
        {**ROW, "prompt": "".join(rng.choices(string.ascii_letters, k=200))}
        for _ in range(4_500)
    ]
    path = tmp_path / f"rows.{kind}"
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1_000)
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows).encode()
        path.write_bytes(gzip.compress(text) if kind == "gzip" else text)
    seen: list[tuple[float, int]] = []
    parse_file(path, progress=lambda share, records: seen.append((share, records)))
    assert len(seen) >= 3
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    assert 0 < seen[0][0] < 0.5 and 0 < seen[0][1] < 4_500
    assert seen[-1] == (1.0, 4_500)


def test_the_import_command_draws_a_progress_bar(tmp_path, db):
    from io import StringIO

    from django.core.management import call_command

    path = _jsonl(tmp_path / "many.jsonl", 5_000)
    err = StringIO()
    call_command("import_preferences", str(path), "--project", "bar", stderr=err)
    lines = err.getvalue().splitlines()
    assert lines[-1] == f"reading many.jsonl [{'#' * 30}] 100% 5,000 records"
    assert 3 <= len(lines) <= 11  # one line per tenth off a terminal
    assert lines[0].startswith("reading many.jsonl [")


def _parquet_bomb(path: Path, rows: int = 2000, width: int = 10_000) -> Path:
    """A Parquet file of one long text repeated: dictionary encoding stores it once,
    so the file and its footer's sizes are small and the rows inflate ~20,000-fold."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{**ROW, "prompt": "x" * width}] * rows), path)
    return path


def test_a_parquet_file_that_inflates_past_the_cap_is_refused_as_it_is_read(
    tmp_path, settings
):
    bomb = _parquet_bomb(tmp_path / "bomb.parquet")
    assert bomb.stat().st_size < 5_000  # its footer claims about 10 KB
    settings.IMPORT_MAX_BYTES = 1_000_000  # the rows hold 20 MB
    with pytest.raises(ValidationError, match="more than 1000000 bytes") as caught:
        parse_file(bomb)
    assert "bomb.parquet" in str(caught.value)


def test_a_parquet_prompt_file_that_inflates_past_the_cap_is_refused(tmp_path):
    from annotation.prompt_files import read_prompt_file

    bomb = _parquet_bomb(tmp_path / "prompts.parquet")
    assert (
        len(read_prompt_file("p.parquet", bomb, max_bytes=50_000_000).prompts) == 2000
    )
    with pytest.raises(ValidationError, match="more than 1000000 bytes") as caught:
        read_prompt_file("prompts.parquet", bomb, max_bytes=1_000_000)
    assert "prompts.parquet" in str(caught.value)


def test_a_damaged_parquet_file_is_refused_naming_it(tmp_path):
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(b"PAR1" + b"\0" * 100)  # the magic, then no footer
    with pytest.raises(
        ValidationError, match="damaged.parquet is not a readable Parquet"
    ):
        parse_file(damaged)


_POOLS: list = []  # Arrow pools outlive the arrays they allocated (a freed pool crashes)


def _arrow_peak(read) -> int:
    """The most memory Arrow held while `read()` ran, on a pool of its own."""
    import gc

    import pyarrow as pa

    parent = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(parent)
    _POOLS.append(pool)
    pa.set_memory_pool(pool)
    try:
        read()
    finally:
        gc.collect()
        pa.set_memory_pool(parent)
    return pool.max_memory()


@pytest.mark.parametrize("nested", [False, True])
def test_a_parquet_bomb_is_refused_before_a_batch_of_it_is_decoded(
    tmp_path, settings, nested
):
    """One 1 MB text repeated in 256 rows: a 256-row batch decodes to 256 MB. Its size is
    counted from the dictionary before Arrow expands it, in a top-level column and
    inside a list of structs (the messages of a conversation)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = "x" * 1_000_000
    if nested:
        row = {"messages": [{"role": "user", "content": text}], "chosen": "a"}
    else:
        row = {**ROW, "prompt": text}
    bomb = tmp_path / "bomb.parquet"
    pq.write_table(pa.Table.from_pylist([row] * 256), bomb)
    assert bomb.stat().st_size < 100_000
    settings.IMPORT_MAX_BYTES = 4_000_000  # the footer says about 1 MB

    def read():
        with pytest.raises(ValidationError, match="as its rows are read") as caught:
            parse_file(bomb)
        assert "bomb.parquet" in str(caught.value)
        assert re.search(r"\(256\d{6};", str(caught.value))  # the decoded size

    assert _arrow_peak(read) < 32_000_000


def test_a_parquet_file_of_more_values_than_bytes_is_refused_from_its_footer(
    tmp_path, settings
):
    """Run-length encoding stores a million repeats of one dictionary index in a few
    bytes; decoded, each takes four."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    many = tmp_path / "many.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"prompt": "Hi?", "tags": ["a"] * 1_000_000}]), many
    )
    settings.IMPORT_MAX_BYTES = 500_000
    with pytest.raises(ValidationError, match="many.parquet holds 1000001 values"):
        parse_file(many)
