"""Imports are capped in records, bytes and decompression ratio, read as a stream."""

from __future__ import annotations

import gzip
import json
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
