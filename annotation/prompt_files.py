"""Prompt files: the prompts in a text, JSON, JSONL, CSV or Parquet file, one per record.

Plain text holds one prompt a line. A JSON, JSONL, CSV or Parquet record is a string,
a message list, or an object with `prompt` (a string or a message list), `messages`
or `text`; a CSV cell that holds a JSON list is read as a message list. Gzip is
undone first (`.gz`), to at most `max_bytes`. Records that cannot be read are
reported by line, never guessed at; the rest go to the curation pool
(`annotation.pool.add_prompts`). `iter_records` is the reading alone, which a
corpus upload (`annotation.corpora`) shares.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError

SUFFIXES = (".txt", ".json", ".jsonl", ".csv", ".parquet")
FIELDS = ("prompt", "messages", "text")
MAX_BYTES = 256 << 20  # decompressed; the upload itself is bounded by its page


@dataclass(frozen=True)
class Unreadable:
    """A record that could not be read, and why."""

    reason: str


@dataclass
class PromptFile:
    """The prompts read from a file, the line (or row) each came from, what was unreadable."""

    prompts: list = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    unreadable: list[dict] = field(default_factory=list)  # {line, reason}

    def add(self, line: int, record: object) -> None:
        """Take the prompt out of one record, or note why it is unreadable."""
        if isinstance(record, dict):
            present = [k for k in FIELDS if record.get(k) not in (None, "")]
            if not present:
                self.unreadable.append(
                    {
                        "line": line,
                        "reason": f"no {', '.join(FIELDS)} field; found "
                        f"{', '.join(map(str, record)) or 'nothing'}",
                    }
                )
                return
            record = record[present[0]]
        if isinstance(record, str) and record.strip().startswith("["):
            try:
                record = json.loads(record)
            except json.JSONDecodeError:
                pass  # a text that starts with a bracket
        self.prompts.append(record)
        self.lines.append(line)


def read_prompt_file(name: str, data: bytes, max_bytes: int = MAX_BYTES) -> PromptFile:
    """Return the prompts of a file named `name` with contents `data`.

    Raise ValidationError naming the suffix when the kind of file is not one of SUFFIXES,
    or when a whole file (JSON, Parquet, gzip past `max_bytes`) cannot be read.
    """
    result = PromptFile()
    for line, record in iter_records(name, data, max_bytes):
        if isinstance(record, Unreadable):
            result.unreadable.append({"line": line, "reason": record.reason})
        else:
            result.add(line, record)
    return result


def iter_records(
    name: str, data: bytes, max_bytes: int = MAX_BYTES
) -> Iterator[tuple[int, object]]:
    """Yield (line or row, record) for each record of a file named `name`.

    A plain-text record is a non-blank line; a JSON record is any JSON value; a CSV
    record is a dict of its row; a JSONL line that is not JSON yields an
    `Unreadable`. Raise ValidationError for a kind of file not in SUFFIXES, a whole file
    that cannot be parsed, or gzip that inflates past `max_bytes`.
    """
    if name.endswith(".gz"):
        data = gunzip(name, data, max_bytes)
        name = name.removesuffix(".gz")
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix == ".parquet":
        yield from _read_parquet(data)
        return
    if suffix not in SUFFIXES:
        raise ValidationError(
            f"cannot read {name!r}: expected a file ending in {', '.join(SUFFIXES)} "
            "(optionally .gz)"
        )
    text = data.decode("utf-8-sig", errors="replace")
    if suffix == ".txt":
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield number, line
    elif suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{name} is not valid JSON: {exc}") from None
        if not isinstance(records, list):
            raise ValidationError(f"{name} must hold a JSON list of records")
        yield from enumerate(records, start=1)
    elif suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, Unreadable(f"not valid JSON: {exc.msg}")
    else:
        reader = csv.DictReader(io.StringIO(text))
        for row in reader:
            yield reader.line_num, row


def gunzip(name: str, data: bytes, max_bytes: int) -> bytes:
    """Return the inflated bytes; raise ValidationError past `max_bytes` (a gzip bomb)."""
    try:
        inflated = gzip.GzipFile(fileobj=io.BytesIO(data)).read(max_bytes + 1)
    except (OSError, EOFError) as exc:
        raise ValidationError(f"{name} is not readable gzip: {exc}") from None
    if len(inflated) > max_bytes:
        raise ValidationError(
            f"{name} inflates to more than {max_bytes:,} bytes; split it into smaller files"
        )
    return inflated


def _read_parquet(data: bytes) -> Iterator[tuple[int, object]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValidationError(f"not a readable Parquet file: {exc}") from None
    yield from enumerate(table.to_pylist(), start=1)
