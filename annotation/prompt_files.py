"""Prompt files: the prompts in a text, JSON, JSONL, CSV or Parquet file, one per record.

Plain text holds one prompt a line. A JSON, JSONL, CSV or Parquet record is a string,
a message list, or an object with `prompt` (a string or a message list), `messages`
or `text`; a CSV cell that holds a JSON list is read as a message list. Gzip is
undone first (`.gz`). Records that cannot be read are reported by line, never
guessed at; the rest go to the curation pool (`annotation.pool.add_prompts`).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError

SUFFIXES = (".txt", ".json", ".jsonl", ".csv", ".parquet")
FIELDS = ("prompt", "messages", "text")


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


def read_prompt_file(name: str, data: bytes) -> PromptFile:
    """Return the prompts of a file named `name` with contents `data`.

    Raise ValidationError naming the suffix when the kind of file is not one of SUFFIXES,
    or when a whole file (JSON, Parquet) cannot be parsed.
    """
    if name.endswith(".gz"):
        data = gzip.decompress(data)
        name = name.removesuffix(".gz")
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    result = PromptFile()
    if suffix == ".parquet":
        _read_parquet(data, result)
        return result
    if suffix not in SUFFIXES:
        raise ValidationError(
            f"cannot read {name!r}: expected a file ending in {', '.join(SUFFIXES)} "
            "(optionally .gz)"
        )
    text = data.decode("utf-8-sig", errors="replace")
    if suffix == ".txt":
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                result.add(number, line)
    elif suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{name} is not valid JSON: {exc}") from None
        if not isinstance(records, list):
            raise ValidationError(f"{name} must hold a JSON list of prompts")
        for number, record in enumerate(records, start=1):
            result.add(number, record)
    elif suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                result.add(number, json.loads(line))
            except json.JSONDecodeError as exc:
                result.unreadable.append(
                    {"line": number, "reason": f"not valid JSON: {exc.msg}"}
                )
    else:
        reader = csv.DictReader(io.StringIO(text))
        for row in reader:
            result.add(reader.line_num, row)
    return result


def _read_parquet(data: bytes, result: PromptFile) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValidationError(f"not a readable Parquet file: {exc}") from None
    for number, row in enumerate(table.to_pylist(), start=1):
        result.add(number, row)
