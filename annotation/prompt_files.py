"""Prompt files: the prompts in a text, JSON, JSONL, CSV or Parquet file, one per record.

Plain text holds one prompt a line. A JSON, JSONL, CSV or Parquet record is a string,
a message list, or an object with `prompt` (a string or a message list), `messages`
or `text`; a CSV cell that holds a JSON list is read as a message list. The file is
read from disk as a stream: gzip (`.gz`) is undone as it is read, to at most
`max_bytes` and the import's decompression ratio (`importing.CappedStream`), and a
line, or a record of a JSON list, is at most IMPORT_MAX_LINE_BYTES. Records that cannot be read are
reported by line, never guessed at; the rest go to the curation pool
(`annotation.pool.add_prompts`). `iter_records` is the reading alone, which a
corpus upload (`annotation.corpora`) shares.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from django.conf import settings
from django.core.exceptions import ValidationError

from annotation.importing import PROGRESS_EVERY, CappedStream, Progress, read_parquet

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


def read_prompt_file(
    name: str,
    path: Path,
    max_bytes: int = MAX_BYTES,
    progress: Progress | None = None,
) -> PromptFile:
    """Return the prompts of the file at `path`, sent as `name`.

    Raise ValidationError naming the suffix when the kind of file is not one of SUFFIXES,
    or when a whole file (JSON, Parquet, gzip past `max_bytes`) cannot be read.
    `progress` is told as the file is read (see `iter_records`).
    """
    result = PromptFile()
    for line, record in iter_records(name, path, max_bytes, progress):
        if isinstance(record, Unreadable):
            result.unreadable.append({"line": line, "reason": record.reason})
        else:
            result.add(line, record)
    return result


def iter_records(
    name: str,
    path: Path,
    max_bytes: int = MAX_BYTES,
    progress: Progress | None = None,
) -> Iterator[tuple[int, object]]:
    """Yield (line or row, record) for each record of the file at `path`, sent as `name`.

    A plain-text record is a non-blank line; a JSON record is any JSON value; a CSV
    record is a dict of its row; a JSONL line that is not JSON yields an
    `Unreadable`. Raise ValidationError for a kind of file not in SUFFIXES, a whole file
    that cannot be parsed, gzip that inflates past `max_bytes` or the import's
    decompression ratio, or a line past IMPORT_MAX_LINE_BYTES. `progress`, when
    given, is told as the file is read the share of it read (compressed bytes
    consumed) and the records so far, 1.0 at the end.
    """
    compressed = name.endswith(".gz")
    inner = name.removesuffix(".gz")
    suffix = check_suffix(name)
    size = path.stat().st_size
    count = 0
    with open(path, "rb") as raw:
        source = gzip.GzipFile(fileobj=raw) if compressed else raw
        capped = CappedStream(source, name, size if compressed else None, max_bytes)
        stream = io.BufferedReader(capped, 1 << 16)
        try:
            for count, item in enumerate(
                _parse(inner, suffix, stream, max_bytes), start=1
            ):
                if progress is not None and count % PROGRESS_EVERY == 0:
                    progress(min(1.0, raw.tell() / max(1, size)), count)
                yield item
        except (OSError, EOFError, zlib.error) as exc:
            if not compressed:
                raise
            raise ValidationError(f"{name} is not readable gzip: {exc}") from None
    if progress is not None:
        progress(1.0, count)


def check_suffix(name: str) -> str:
    """Return the suffix that says how to read a file named `name` (past `.gz`);
    raise ValidationError when it is not one of SUFFIXES."""
    inner = name.removesuffix(".gz")
    suffix = "." + inner.rsplit(".", 1)[-1].lower() if "." in inner else ""
    if suffix not in SUFFIXES:
        raise ValidationError(
            f"cannot read {inner!r}: expected a file ending in {', '.join(SUFFIXES)} "
            "(optionally .gz)"
        )
    return suffix


def _parse(
    name: str, suffix: str, stream: io.BufferedReader, max_bytes: int
) -> Iterator[tuple[int, object]]:
    """Yield the records of a decompressed stream of the kind `suffix`."""
    if suffix == ".parquet":
        # Read whole (Parquet's footer is at its end; the stream's cap bounds it),
        # then bounded again as its rows inflate.
        yield from read_parquet(io.BytesIO(stream.read()), name, max_bytes)
        return
    if suffix == ".json":
        yield from _json_list(name, stream)
        return
    newline = "" if suffix == ".csv" else None
    text = io.TextIOWrapper(
        stream, encoding="utf-8-sig", errors="replace", newline=newline
    )
    if suffix == ".txt":
        for number, line in _lines(name, text):
            if line.strip():
                yield number, line
    elif suffix == ".jsonl":
        for number, line in _lines(name, text):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, Unreadable(f"not valid JSON: {exc.msg}")
    else:
        reader = csv.DictReader(text)
        try:
            for row in reader:
                yield reader.line_num, row
        except csv.Error as exc:
            raise ValidationError(
                f"{name}: line {reader.line_num} is not readable CSV: {exc}"
            ) from None


def _json_list(name: str, stream: io.BufferedReader) -> Iterator[tuple[int, object]]:
    """Yield (number, record) of a JSON list as ijson parses it, a record at a time:
    neither the text nor the whole list is ever held. A record is bounded as a line
    is: past IMPORT_MAX_LINE_BYTES of it (within one read) it is refused as it is
    read, before it is built. A leading byte-order mark is skipped; a file that is
    not a list, or not valid JSON to its end, is a ValidationError naming `name`."""
    import ijson

    if stream.peek(3)[:3] == b"\xef\xbb\xbf":
        stream.read(3)
    while (head := stream.peek(1)[:1]) and head.isspace():
        stream.read(1)
    if head != b"[":
        raise ValidationError(f"{name} must hold a JSON list of records")
    source = _RecordBound(stream, name, settings.IMPORT_MAX_LINE_BYTES)
    try:
        for number, record in enumerate(
            ijson.items(source, "item", use_float=True), start=1
        ):
            source.record_ended(number)
            yield number, record
    except ijson.JSONError as exc:
        raise ValidationError(f"{name} is not valid JSON: {exc}") from None


class _RecordBound:
    """The stream ijson reads, counting the bytes read since the last record came
    out. ijson yields every record its bytes so far complete before it reads again,
    so those bytes all belong to the record being parsed: past `cap` of them the
    record is longer than the cap, and the read is refused."""

    def __init__(self, stream: io.BufferedReader, name: str, cap: int) -> None:
        self.stream, self.name, self.cap = stream, name, cap
        self.read_bytes = self.at_last_record = 0
        self.records = 0

    def record_ended(self, number: int) -> None:
        self.records, self.at_last_record = number, self.read_bytes

    def read(self, size: int = -1) -> bytes:
        if self.read_bytes - self.at_last_record > self.cap:
            raise ValidationError(
                f"{self.name}: record {self.records + 1} is longer than {self.cap} "
                "bytes (IMPORT_MAX_LINE_BYTES); split it"
            )
        data = self.stream.read(size)
        self.read_bytes += len(data)
        return data


def _lines(name: str, text: TextIO) -> Iterator[tuple[int, str]]:
    """Yield (number, line without its end) of a text, each at most
    IMPORT_MAX_LINE_BYTES characters (then a ValidationError)."""
    cap = settings.IMPORT_MAX_LINE_BYTES
    number = 0
    while line := text.readline(cap + 1):
        number += 1
        if len(line) > cap:
            raise ValidationError(
                f"{name}: line {number} is longer than {cap} characters "
                "(IMPORT_MAX_LINE_BYTES); split it"
            )
        yield number, line.rstrip("\r\n")
