"""Bringing existing preference data into a project, whole or not at all.

Reads JSONL, gzip-compressed JSONL or Parquet in one of these formats, detected from
the first record or forced: `trl` preference pairs (conversational or standard,
explicit or implicit prompt; UltraFeedback's `score_chosen`/`score_rejected` turn an
equal score into a tie), `kto` unpaired rows, `hh` (HH-RLHF transcripts),
`ultrafeedback` (per-completion scores become a ranking with ties), `oasst_flat`
(OpenAssistant message rows) and `oasst_tree` (OpenAssistant nested trees), where
ranked sibling replies become a ranking, and `ranking` (this platform's list export).
Every record becomes a prompt (deduplicated against the project), a task with its
responses under an `imported:<source>` policy, and a ranking by an
`imported:<source>` user, each carrying `file:line` as provenance.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone
from django.utils.text import get_valid_filename

from annotation.audit import record as audit_record
from annotation.models import (
    ImportReport,
    Project,
    Prompt,
    Ranking,
    RankingTask,
    Response,
    messages_hash,
    normalise_messages,
)
from config import task_queue
from config.workers import (
    HEARTBEAT_SECONDS,
    LOST_AFTER_SECONDS,
    claim,
    fail_lost,
    start_heartbeat,
)
from inference.models import Policy

FORMATS = ("trl", "kto", "hh", "ultrafeedback", "oasst_flat", "oasst_tree", "ranking")
MAX_TEXT_CHARS = 100_000
BATCH = 2000
# Parquet rows decoded at a time before their bytes are counted: small, so that a
# file of a few huge dictionary-encoded cells overshoots its cap by little.
PARQUET_BATCH = 256
# How often reading reports progress, in records.
PROGRESS_EVERY = 1000
# A staged upload no import needs is removed once untouched this long.
ORPHAN_AFTER_SECONDS = 3600

# Told, as a file is read, the share of it read (0 to 1) and the records so far.
Progress = Callable[[float, int], None]


@dataclass
class Record:
    """One ranking to import: a prompt, its responses, and an order of their indices."""

    line: int
    prompt: list[dict]
    responses: list[str]
    order: list[list[int]]


@dataclass
class Rejection:
    line: int
    reason: str


@dataclass
class Parsed:
    """What a file holds: the detected format, good records and rejected ones."""

    format: str
    records: list[Record] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    total: int = 0


class BadRecord(Exception):
    """A record that cannot be imported; the message is the reason shown to the user."""


class CappedStream(io.RawIOBase):
    """A decompressed byte stream that stops past a byte cap or a decompression ratio.

    Counting as the bytes come out of the decompressor refuses a gzip bomb after at
    most RATIO_FLOOR bytes, whatever it would inflate to. The cap is IMPORT_MAX_BYTES
    unless `max_bytes` is given (prompt and corpus files: `prompt_files.MAX_BYTES`).
    """

    RATIO_FLOOR = 16 << 20  # small files may compress very well

    def __init__(
        self,
        raw: BinaryIO,
        name: str,
        compressed_size: int | None,
        max_bytes: int | None = None,
    ) -> None:
        self._raw = raw
        self._name = name
        self._compressed = compressed_size
        self._max_bytes = max_bytes or settings.IMPORT_MAX_BYTES
        self._cap = "IMPORT_MAX_BYTES" if max_bytes is None else "the most it reads"
        self._max_ratio = settings.IMPORT_MAX_RATIO
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._raw.readinto(buffer)
        self.total += n
        if self.total > self._max_bytes:
            raise ValidationError(
                f"{self._name} holds more than {self._max_bytes} bytes "
                f"({self._cap}); split it into smaller files"
            )
        if (
            self._compressed
            and self.total > self.RATIO_FLOOR
            and self.total > self._max_ratio * self._compressed
        ):
            raise ValidationError(
                f"{self._name} would decompress to more than {self._max_ratio} times "
                f"its {self._compressed} bytes (IMPORT_MAX_RATIO); it looks like a "
                "compression bomb, not preference data"
            )
        return n


def _too_many_records(name: str) -> ValidationError:
    return ValidationError(
        f"{name} holds more than {settings.IMPORT_MAX_RECORDS} records "
        "(IMPORT_MAX_RECORDS); split it into smaller files"
    )


def _decoded_bytes(array) -> int:
    """The bytes a Parquet column's Arrow array holds once decoded to Python: a
    dictionary array (a text column read with `read_dictionary`) counted as its values
    repeated, computed from their lengths without expanding them; lists, maps and structs
    through their children (`flatten` keeps a slice's bounds)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind):
        lengths = pc.take(pc.binary_length(array.dictionary), array.indices)
        return int(pc.sum(lengths).as_py() or 0) + array.indices.nbytes
    if pa.types.is_struct(kind):
        return sum(_decoded_bytes(child) for child in array.flatten())
    if pa.types.is_map(kind):  # keys and items whole: at most an overcount
        return 8 * len(array) + _decoded_bytes(array.keys) + _decoded_bytes(array.items)
    if (
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
    ):
        return 8 * len(array) + _decoded_bytes(array.flatten())
    return array.nbytes


def read_parquet(
    source: str | Path | BinaryIO,
    name: str,
    max_bytes: int | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[int, dict]]:
    """Yield (row, record) of a Parquet file (a path or a binary file), a batch at a time.

    Bounded twice, since Parquet's dictionary encoding lets a file of a few KB and a
    footer that says so hold rows thousands of times larger: the footer's row count,
    value count and uncompressed sizes are checked before any row is read, and the
    rows' bytes PARQUET_BATCH rows at a time, counted from each text column's
    dictionary before Arrow expands it (`_decoded_bytes`), so one long text repeated
    is refused without a batch of its copies in memory. Past a cap (IMPORT_MAX_RECORDS,
    and IMPORT_MAX_BYTES unless `max_bytes` is given), or for a file that is not
    Parquet, ValidationError naming `name`. The one Parquet reader of imports, prompt
    files and corpora.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    cap = max_bytes or settings.IMPORT_MAX_BYTES
    cap_name = "IMPORT_MAX_BYTES" if max_bytes is None else "the most it reads"

    def too_big(size: int, how: str) -> ValidationError:
        return ValidationError(
            f"{name} holds more than {cap} bytes {how} ({size}; {cap_name}); "
            "split it into smaller files"
        )

    try:
        meta = pq.read_metadata(source)
        if meta.num_rows > settings.IMPORT_MAX_RECORDS:
            raise _too_many_records(name)
        groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
        stated = sum(group.total_byte_size for group in groups)
        if stated > cap:
            raise too_big(stated, "uncompressed")
        # Run-length encoding stores a million repeats of a value in a few bytes; Arrow
        # gives each at least one byte (an index, an offset), so more values than bytes
        # cannot fit the cap.
        values = sum(
            group.column(j).num_values
            for group in groups
            for j in range(group.num_columns)
        )
        if values > cap:
            raise ValidationError(
                f"{name} holds {values} values, more than the {cap} bytes they would "
                f"take at one byte each ({cap_name}); split it into smaller files"
            )
        texts = [c.path for c in meta.schema if c.physical_type == "BYTE_ARRAY"]
        parquet = pq.ParquetFile(source, metadata=meta, read_dictionary=texts)
        row = inflated = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH):
            inflated += sum(_decoded_bytes(column) for column in batch.columns)
            if inflated > cap:
                raise too_big(inflated, "as its rows are read")
            for record in batch.to_pylist():
                row += 1
                yield row, record
            if progress is not None:
                progress(row / max(1, meta.num_rows), row)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValidationError(f"{name} is not a readable Parquet file: {exc}") from None


def _read_jsonl(
    path: Path, compressed: bool, progress: Progress | None = None
) -> Iterator[tuple[int, dict | Rejection]]:
    """Yield the objects of a (gzip) JSONL file, line by bounded line."""
    max_line = settings.IMPORT_MAX_LINE_BYTES
    records = 0
    with open(path, "rb") as raw:
        inner: BinaryIO = gzip.GzipFile(fileobj=raw) if compressed else raw
        file_size = path.stat().st_size
        size = file_size if compressed else None
        stream = io.BufferedReader(CappedStream(inner, path.name, size), 1 << 16)
        line = 0
        while chunk := stream.readline(max_line + 1):
            if progress is not None and line % PROGRESS_EVERY == 0 and line:
                # The compressed bytes consumed: a share of the file, gzip or not.
                progress(min(1.0, raw.tell() / max(1, file_size)), records)
            line += 1
            if len(chunk) > max_line:
                raise ValidationError(
                    f"{path.name}: line {line} is longer than {max_line} bytes "
                    "(IMPORT_MAX_LINE_BYTES); is it JSONL, one record per line?"
                )
            if not chunk.strip():
                continue
            records += 1
            if records > settings.IMPORT_MAX_RECORDS:
                raise _too_many_records(path.name)
            yield line, _json_object(line, chunk)
        if progress is not None:
            progress(1.0, records)


def _json_object(line: int, chunk: bytes) -> dict | Rejection:
    """Return the line's JSON object, or a Rejection saying why it is not one."""
    try:
        obj = json.loads(chunk.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Rejection(line, f"not UTF-8 text: {exc.reason} at byte {exc.start}")
    except json.JSONDecodeError as exc:
        return Rejection(line, f"bad JSON: {exc.msg} at column {exc.colno}")
    if not isinstance(obj, dict):
        return Rejection(line, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def read_objects(
    path: Path, progress: Progress | None = None
) -> Iterator[tuple[int, dict | Rejection]]:
    """Yield (line, object) for each record of a JSONL, gzip JSONL or Parquet file.

    A line that is not a JSON object yields a Rejection instead. Past the import caps
    (records, bytes, decompression ratio, line length: settings IMPORT_MAX_*) reading
    stops with a ValidationError naming the cap. `progress`, when given, is told as
    the file is read the share of it read and the records so far (1.0 at the end).
    """
    with open(path, "rb") as probe:
        magic = probe.read(4)
    if magic == b"PAR1":
        yield from read_parquet(path, path.name, progress=progress)
    else:
        yield from _read_jsonl(path, magic[:2] == b"\x1f\x8b", progress)


def detect_format(obj: dict) -> str:
    """Return the format a record's keys imply; raise BadRecord when none fits."""
    if {"message_id", "role"} <= obj.keys() and "parent_id" in obj:
        return "oasst_flat"
    if isinstance(obj.get("prompt"), dict) and "replies" in obj["prompt"]:
        return "oasst_tree"
    if "completions" in obj:
        return "ultrafeedback"
    if "responses" in obj and "order" in obj:
        return "ranking"
    if {"completion", "label"} <= obj.keys():
        return "kto"
    if {"chosen", "rejected"} <= obj.keys():
        if "prompt" not in obj and isinstance(obj["chosen"], str):
            return "hh"
        return "trl"
    raise BadRecord(
        f"cannot tell the format from the keys {sorted(obj)[:8]}; pass one of {FORMATS}"
    )


def parse_file(
    path: Path, fmt: str | None = None, progress: Progress | None = None
) -> Parsed:
    """Read and validate every record; nothing is written. `progress`: see
    `read_objects`."""
    if fmt is not None and fmt not in FORMATS:
        raise ValidationError(f"format must be one of {FORMATS}, got {fmt!r}")
    objects = list(read_objects(path, progress))
    rejected = [o for _, o in objects if isinstance(o, Rejection)]
    good = [(line, o) for line, o in objects if not isinstance(o, Rejection)]
    if fmt is None:
        if not good:
            raise ValidationError(
                f"{path.name} holds no readable records; is it empty?"
            )
        try:
            fmt = detect_format(good[0][1])
        except BadRecord as exc:
            raise ValidationError(f"{path.name}, line {good[0][0]}: {exc}") from None
    parsed = Parsed(format=fmt, rejected=rejected, total=len(objects))
    parser = PARSERS[fmt]
    for item in parser(good):
        if isinstance(item, Rejection):
            parsed.rejected.append(item)
        else:
            try:
                parsed.records.append(_checked(item))
            except BadRecord as exc:
                parsed.rejected.append(Rejection(item.line, str(exc)))
    parsed.rejected.sort(key=lambda r: r.line)
    return parsed


def _checked(record: Record) -> Record:
    """Return the record if its texts are sane; raise BadRecord naming the problem."""
    try:
        record.prompt = normalise_messages(record.prompt)
    except ValidationError as exc:
        raise BadRecord(exc.messages[0]) from None
    for message in record.prompt:
        if len(message["content"]) > MAX_TEXT_CHARS:
            raise BadRecord(
                f"oversized text: a prompt message has {len(message['content']):,} characters;"
                f" the limit is {MAX_TEXT_CHARS:,}"
            )
    for i, text in enumerate(record.responses):
        if not isinstance(text, str) or not text.strip():
            raise BadRecord(f"empty text in response {i}")
        if len(text) > MAX_TEXT_CHARS:
            raise BadRecord(
                f"oversized text: response {i} has {len(text):,} characters;"
                f" the limit is {MAX_TEXT_CHARS:,}"
            )
    if len(record.responses) < 2:
        raise BadRecord("a ranking needs at least two responses")
    if len(set(record.responses)) < len(record.responses):
        raise BadRecord("identical chosen and rejected (or repeated response) texts")
    return record


def _need(obj: dict, *keys: str) -> list:
    missing = [k for k in keys if obj.get(k) is None]
    if missing:
        raise BadRecord(f"missing field {missing[0]!r}")
    return [obj[k] for k in keys]


def _assistant_text(value: object, name: str) -> str:
    """Return a completion's text from a string or a one-assistant-message list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        last = value[-1]
        if last.get("role") != "assistant":
            raise BadRecord(
                f"unknown role {last.get('role')!r} for the last message of {name}; "
                "expected 'assistant'"
            )
        return last.get("content") or ""
    raise BadRecord(
        f"{name} must be a string or a list of messages, got {type(value).__name__}"
    )


def _guarded(parse):
    """Turn BadRecord raised for one object into a Rejection for its line."""

    def run(objects: list[tuple[int, dict]]) -> Iterator[Record | Rejection]:
        for line, obj in objects:
            try:
                yield from parse(line, obj)
            except BadRecord as exc:
                yield Rejection(line, str(exc))

    return run


def _scores(obj: dict) -> tuple[float, float] | None:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    for source in (obj, meta):
        if (
            source.get("score_chosen") is not None
            and source.get("score_rejected") is not None
        ):
            return float(source["score_chosen"]), float(source["score_rejected"])
    return None


@_guarded
def _parse_trl(line: int, obj: dict) -> Iterator[Record]:
    chosen_raw, rejected_raw = _need(obj, "chosen", "rejected")
    if "prompt" in obj:
        (prompt,) = _need(obj, "prompt")
        chosen = _assistant_text(chosen_raw, "chosen")
        rejected = _assistant_text(rejected_raw, "rejected")
    elif isinstance(chosen_raw, list) and isinstance(rejected_raw, list):
        prompt = chosen_raw[:-1]
        if prompt != rejected_raw[:-1]:
            raise BadRecord("chosen and rejected differ before their last message")
        chosen = _assistant_text(chosen_raw, "chosen")
        rejected = _assistant_text(rejected_raw, "rejected")
    else:
        raise BadRecord(
            "missing field 'prompt' (plain-text implicit prompts need --format hh)"
        )
    scores = _scores(obj)
    order = [[0, 1]] if scores is not None and scores[0] == scores[1] else [[0], [1]]
    yield Record(line, prompt, [chosen, rejected], order)


_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_transcript(text: str) -> list[dict]:
    """Return the messages of an HH-RLHF transcript (`\\n\\nHuman: …\\n\\nAssistant: …`)."""
    if not isinstance(text, str):
        raise BadRecord(f"a transcript must be a string, got {type(text).__name__}")
    parts = _TURN.split(text)
    if parts[0].strip():
        raise BadRecord("a transcript must start with '\\n\\nHuman:'")
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=False):
        if content.startswith(" "):
            content = content[1:]
        messages.append(
            {"role": "user" if speaker == "Human" else "assistant", "content": content}
        )
    if not messages:
        raise BadRecord(
            "a transcript must have '\\n\\nHuman:' and '\\n\\nAssistant:' turns"
        )
    return messages


_ASSISTANT = "\n\nAssistant:"


@_guarded
def _parse_hh(line: int, obj: dict) -> Iterator[Record]:
    """Split at the longest common prefix ending in `\n\nAssistant:` (HH's prompt)."""
    chosen_text, rejected_text = _need(obj, "chosen", "rejected")
    if not isinstance(chosen_text, str) or not isinstance(rejected_text, str):
        raise BadRecord("chosen and rejected must be transcript strings")
    common = 0
    for a, b in zip(chosen_text, rejected_text, strict=False):
        if a != b:
            break
        common += 1
    cut = chosen_text.rfind(_ASSISTANT, 0, common)
    if cut < 0:
        raise BadRecord(
            "chosen and rejected share no turns ending in '\\n\\nAssistant:'"
        )
    prompt = parse_transcript(chosen_text[:cut])
    if prompt[-1]["role"] != "user":
        raise BadRecord("the shared prompt must end with a Human turn")
    start = cut + len(_ASSISTANT)
    responses = [text[start:] for text in (chosen_text, rejected_text)]
    responses = [r[1:] if r.startswith(" ") else r for r in responses]
    yield Record(line, prompt, responses, [[0], [1]])


def order_by_scores(scores: list[float]) -> list[list[int]]:
    """Return indices grouped by score, best first; equal scores tie."""
    groups: dict[float, list[int]] = defaultdict(list)
    for i, score in enumerate(scores):
        groups[score].append(i)
    return [groups[s] for s in sorted(groups, reverse=True)]


@_guarded
def _parse_ultrafeedback(line: int, obj: dict) -> Iterator[Record]:
    prompt = (
        obj.get("prompt") if obj.get("prompt") is not None else obj.get("instruction")
    )
    if prompt is None:
        raise BadRecord("missing field 'instruction'")
    (completions,) = _need(obj, "completions")
    if not isinstance(completions, list):
        raise BadRecord("completions must be a list")
    texts, scores = [], []
    for i, c in enumerate(completions):
        if not isinstance(c, dict):
            raise BadRecord(f"completion {i} must be an object")
        text = c.get("response", c.get("text"))
        score = c.get("overall_score", c.get("score"))
        if text is None:
            raise BadRecord(f"missing field 'response' in completion {i}")
        if score is None:
            raise BadRecord(f"missing field 'overall_score' in completion {i}")
        texts.append(text)
        scores.append(float(score))
    yield Record(line, prompt, texts, order_by_scores(scores))


@_guarded
def _parse_ranking(line: int, obj: dict) -> Iterator[Record]:
    prompt, responses, order = _need(obj, "prompt", "responses", "order")
    if not isinstance(responses, list):
        raise BadRecord("responses must be a list")
    index = {}
    for i, r in enumerate(responses):
        if not isinstance(r, dict) or "text" not in r:
            raise BadRecord(f"missing field 'text' in response {i}")
        index[r.get("id", i)] = i
    try:
        groups = [[index[rid] for rid in group] for group in order]
    except (KeyError, TypeError):
        raise BadRecord("order names a response id that is not in responses") from None
    try:
        Ranking.validate_order(groups, range(len(responses)))
    except ValidationError as exc:
        raise BadRecord(exc.messages[0]) from None
    yield Record(line, prompt, [r["text"] for r in responses], groups)


def _parse_kto(objects: list[tuple[int, dict]]) -> Iterator[Record | Rejection]:
    """Group unpaired rows by prompt: desirable completions rank above undesirable ones."""
    groups: dict[str, list[tuple[int, object, str, bool]]] = {}
    for line, obj in objects:
        try:
            prompt, completion, label = _need(obj, "prompt", "completion", "label")
            text = _assistant_text(completion, "completion")
            if not isinstance(label, bool):
                raise BadRecord(f"label must be true or false, got {label!r}")
            key = json.dumps(prompt, sort_keys=True, ensure_ascii=False)
        except BadRecord as exc:
            yield Rejection(line, str(exc))
            continue
        groups.setdefault(key, []).append((line, prompt, text, label))
    for members in groups.values():
        texts = [m[2] for m in members]
        good = [i for i, m in enumerate(members) if m[3]]
        bad = [i for i, m in enumerate(members) if not m[3]]
        if not good or not bad:
            for m in members:
                yield Rejection(
                    m[0],
                    "no completion of the opposite label for this prompt; nothing to rank",
                )
            continue
        yield Record(members[0][0], members[0][1], texts, [good, bad])


_OA_ROLES = {"prompter": "user", "assistant": "assistant"}


def _oa_role(role: object) -> str:
    if role not in _OA_ROLES:
        raise BadRecord(f"unknown role {role!r}; expected 'prompter' or 'assistant'")
    return _OA_ROLES[role]


def _ranked_children(children: list[dict]) -> list[dict]:
    return sorted(
        (c for c in children if c.get("rank") is not None and not c.get("deleted")),
        key=lambda c: c["rank"],
    )


def _oa_record(line: int, path: list[dict], ranked: list[dict]) -> Record:
    prompt = [
        {"role": _oa_role(m.get("role")), "content": m.get("text") or ""} for m in path
    ]
    for child in ranked:
        if _oa_role(child.get("role")) != "assistant":
            raise BadRecord("ranked replies must be assistant messages")
    order = order_by_scores([-float(c["rank"]) for c in ranked])
    return Record(line, prompt, [c.get("text") or "" for c in ranked], order)


def _parse_oasst_flat(objects: list[tuple[int, dict]]) -> Iterator[Record | Rejection]:
    """Rebuild trees from `parent_id`; each parent with ≥2 ranked replies is a ranking."""
    by_id: dict[str, tuple[int, dict]] = {}
    children: dict[str, list[dict]] = defaultdict(list)
    for line, obj in objects:
        if obj.get("message_id") is None:
            yield Rejection(line, "missing field 'message_id'")
            continue
        obj = {**obj, "_line": line}
        by_id[obj["message_id"]] = (line, obj)
        if obj.get("parent_id") is not None:
            children[obj["parent_id"]].append(obj)
    for parent_id, replies in children.items():
        ranked = _ranked_children(replies)
        if len(ranked) < 2:
            continue
        line = ranked[0]["_line"]
        try:
            path: list[dict] = []
            cursor = parent_id
            while cursor is not None:
                if cursor not in by_id:
                    raise BadRecord(f"parent message {cursor} is not in the file")
                path.append(by_id[cursor][1])
                cursor = by_id[cursor][1].get("parent_id")
            yield _oa_record(line, path[::-1], ranked)
        except BadRecord as exc:
            yield Rejection(line, str(exc))


def _parse_oasst_tree(objects: list[tuple[int, dict]]) -> Iterator[Record | Rejection]:
    """Walk each nested tree; each node with ≥2 ranked replies is a ranking."""
    for line, obj in objects:
        root = obj.get("prompt")
        if not isinstance(root, dict):
            yield Rejection(line, "missing field 'prompt'")
            continue
        stack: list[tuple[dict, list[dict]]] = [(root, [root])]
        while stack:
            node, path = stack.pop()
            replies = node.get("replies") or []
            ranked = _ranked_children(replies)
            if len(ranked) >= 2:
                try:
                    yield _oa_record(line, path, ranked)
                except BadRecord as exc:
                    yield Rejection(line, str(exc))
            for child in reversed(replies):
                stack.append((child, path + [child]))


PARSERS = {
    "trl": _parse_trl,
    "hh": _parse_hh,
    "ultrafeedback": _parse_ultrafeedback,
    "ranking": _parse_ranking,
    "kto": _parse_kto,
    "oasst_flat": _parse_oasst_flat,
    "oasst_tree": _parse_oasst_tree,
}


def source_name(path: Path) -> str:
    """Return a short source name from a file name: `helpful-base.test.jsonl.gz` -> `helpful-base`."""
    return path.name.split(".")[0] or "file"


def import_preferences(
    project: Project,
    path: str | Path,
    *,
    fmt: str | None = None,
    source: str | None = None,
    skip_invalid: bool = False,
    user: AbstractBaseUser | None = None,
    display_name: str | None = None,
    progress: Progress | None = None,
    report: ImportReport | None = None,
) -> ImportReport:
    """Import a file's rankings into the project and return the report.

    With any rejected record and `skip_invalid` off, nothing is written (the report
    says why); otherwise every valid record lands in one transaction. Prompts are
    deduplicated against the project's existing prompts by content hash.
    `progress` is told how far reading the file got (see `read_objects`); `report`:
    the queued report to fill (`run_import`), else a new one.
    """
    path = Path(path)
    display_name = display_name or path.name
    source = source or source_name(Path(display_name))
    parsed = parse_file(path, fmt, progress)
    report = report or ImportReport(
        project=project, source=display_name, created_by=user
    )
    report.format = parsed.format
    report.skip_invalid = skip_invalid
    report.records = len(parsed.records) + len(parsed.rejected)
    report.accepted = len(parsed.records)
    report.rejected = [{"line": r.line, "reason": r.reason} for r in parsed.rejected]
    report.progress = 1.0
    report.status = ImportReport.Status.DONE
    report.finished_at = timezone.now()
    if parsed.rejected and not skip_invalid:
        report.save()
        return report
    with transaction.atomic():
        report.prompts_created = _write(project, parsed.records, source, display_name)
        report.rankings_created = len(parsed.records)
        report.is_applied = True
        report.save()
        audit_record(
            user,
            "import.apply",
            obj=report,
            after={
                "source": display_name,
                "rankings": report.rankings_created,
                "prompts": report.prompts_created,
            },
        )
    return report


def queue_upload(
    project: Project,
    upload: UploadedFile,
    *,
    fmt: str | None = None,
    skip_invalid: bool = False,
    user: AbstractBaseUser | None = None,
    kind: str = ImportReport.Kind.PREFERENCES,
    options: dict | None = None,
) -> ImportReport:
    """Stage an upload under EXPORT_DIR/uploads and queue its import for the worker;
    return the queued report, which `run_import` fills as the worker reads the file.
    `kind` says what the file is (preference data, a prompt file, a corpus) and
    `options` what its import needs (`annotation.pool.queue_prompt_file`,
    `annotation.corpora.queue_corpus`).

    The upload is streamed to a `.part` file in a folder of its own and renamed to
    its own name when whole, so the worker never reads a half-written file and its
    messages name the file the user sent; the request body itself is capped by
    MAX_REQUEST_BYTES before any view reads it.
    """
    if fmt is not None and fmt not in FORMATS:
        raise ValidationError(f"format must be one of {FORMATS}, got {fmt!r}")
    from annotation.tasks import import_task

    folder = _uploads() / uuid.uuid4().hex
    folder.mkdir()
    name = get_valid_filename(Path(upload.name or "upload.jsonl").name)[-200:]
    part, staged = folder / f"{name}.part", folder / name
    try:
        with open(part, "wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, staged)
        with transaction.atomic():
            report = ImportReport.objects.create(
                project=project,
                source=Path(upload.name or "upload.jsonl").name[:300],
                format=fmt or "",
                skip_invalid=skip_invalid,
                kind=kind,
                options=options or {},
                status=ImportReport.Status.QUEUED,
                staged_path=str(staged),
                created_by=user,
            )
            task_queue.enqueue_on_commit(lambda: import_task.enqueue(report.pk))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return report


def run_import(report_id: int, *, now: datetime | None = None) -> ImportReport:
    """Import a queued report's staged file (the worker's job) and return the report.

    Only a queued report runs (a job delivered twice does nothing the second
    time). While the file is read, the report's `progress` and `records` are saved
    at most twice a second, so a page can show them; the records then land in one
    transaction, whole or not at all. A file refused by a cap or unreadable fails
    the report with the reason in `error`. The staged file is removed when the job
    ends, and so is any staged file no queued or running import needs (left by a
    worker that was killed).
    """
    claimed = claim(ImportReport.objects.all(), report_id)
    report = ImportReport.objects.select_related("project", "created_by").get(
        pk=report_id
    )
    if not claimed:
        return report
    fail_lost_imports()
    remove_orphan_uploads()
    staged = Path(report.staged_path)
    beating = _heartbeat(report_id)
    try:
        _import(report, staged)
    except ValidationError as exc:
        report.status = ImportReport.Status.FAILED
        report.error = "; ".join(exc.messages)[:2000]
        report.finished_at = now or timezone.now()
    except Exception as exc:
        # Not the file's fault: the report says so, the job's row has the traceback.
        report.status = ImportReport.Status.FAILED
        report.error = f"the import stopped on an internal error: {exc!r}"[:2000]
        report.finished_at = now or timezone.now()
        raise
    finally:
        beating.set()
        shutil.rmtree(staged.parent, ignore_errors=True)
        report.staged_path = ""
        report.save()
    return report


def _import(report: ImportReport, staged: Path) -> None:
    """Run the import a report's kind asks for, filling the report (`run_import`)."""
    progress = _saver(report.pk)
    if report.kind == ImportReport.Kind.PREFERENCES:
        import_preferences(
            report.project,
            staged,
            fmt=report.format or None,
            skip_invalid=report.skip_invalid,
            user=report.created_by,
            display_name=report.source,
            progress=progress,
            report=report,
        )
        return
    # Imported here: both read their files with this module's capped stream.
    from annotation.corpora import build_corpus, parse_filters
    from annotation.pool import add_prompt_file

    options = report.options
    if report.kind == ImportReport.Kind.PROMPTS:
        report.details = add_prompt_file(
            report.project,
            staged,
            report.source,
            is_held_out=bool(options.get("is_held_out")),
            actor=report.created_by,
            progress=progress,
        )
        report.records = report.details["records"]
        report.accepted = report.details["added"]
    else:
        corpus = build_corpus(
            report.project,
            options["name"],
            staged,
            report.source,
            kind=options["kind"],
            filters=parse_filters(options.get("filters"), options["kind"]),
            user=report.created_by,
            progress=progress,
        )
        report.records = corpus.records
        report.details = {"corpus": corpus.name, "kept": corpus.kept}
        report.accepted = corpus.kept
    report.is_applied = report.accepted > 0
    report.progress = 1.0
    report.status = ImportReport.Status.DONE
    report.finished_at = timezone.now()


def _heartbeat(report_id: int) -> threading.Event:
    """Write the report's heartbeat every HEARTBEAT_SECONDS until the returned event
    is set (`config.workers.start_heartbeat`)."""
    running = ImportReport.objects.filter(
        pk=report_id, status=ImportReport.Status.RUNNING
    )
    return start_heartbeat(running, HEARTBEAT_SECONDS, f"import-{report_id}")


def fail_lost_imports(*, now: datetime | None = None) -> list[int]:
    """Fail the running imports whose worker is lost (`config.workers.fail_lost`: its
    process on this host gone, or elsewhere and silent for LOST_AFTER_SECONDS) and
    remove their staged files; return their ids.

    A worker of this host that still runs (`config.workers.worker_state`) keeps its
    import however late its heartbeat: on SQLite the landing transaction holds the
    lock the heartbeat needs, for as long as the rows land.

    Nothing of such an import landed (its rows are written in one transaction);
    the report says so, and the file can be uploaded again.
    """
    running = ImportReport.objects.filter(status=ImportReport.Status.RUNNING)
    staged = dict(running.values_list("pk", "staged_path"))
    failed = fail_lost(
        running,
        LOST_AFTER_SECONDS,
        "the worker running this import stopped ({why}); nothing was imported: "
        "upload the file again",
        now,
        staged_path="",
    )
    for report_id in failed:
        if staged.get(report_id):
            shutil.rmtree(Path(staged[report_id]).parent, ignore_errors=True)
    return failed


def _saver(report_id: int) -> Progress:
    """Return a progress callback that saves the report's progress, throttled."""
    last = [0.0]

    def save(share: float, records: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and share < 1.0:
            return
        last[0] = now
        ImportReport.objects.filter(pk=report_id).update(
            progress=round(share, 4), records=records
        )

    return save


def _uploads() -> Path:
    folder = Path(settings.EXPORT_DIR) / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def remove_orphan_uploads() -> list[str]:
    """Remove the staged uploads (each in a folder of its own) that no queued or
    running import needs and that nothing touched for an hour; return the folders'
    names.

    The hour spares an upload still arriving, or staged a moment before its report
    is committed. A lost worker's upload goes sooner (`fail_lost_imports`).
    """
    needed = {
        Path(path).parent.name
        for path in ImportReport.objects.filter(
            status__in=[ImportReport.Status.QUEUED, ImportReport.Status.RUNNING]
        ).values_list("staged_path", flat=True)
    }
    removed = []
    for folder in sorted(_uploads().iterdir()):
        entries = [folder, *folder.iterdir()] if folder.is_dir() else [folder]
        touched = max(p.stat().st_mtime for p in entries)
        if folder.name in needed or time.time() - touched < ORPHAN_AFTER_SECONDS:
            continue
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        else:
            folder.unlink(missing_ok=True)
        removed.append(folder.name)
    return removed


def _write(project: Project, records: list[Record], source: str, file_name: str) -> int:
    """Create prompts, tasks, responses and rankings; return how many prompts were new."""
    policy, _ = Policy.objects.get_or_create(
        name=f"imported:{source}"[:200], defaults={"kind": Policy.Kind.IMPORTED}
    )
    User = get_user_model()
    annotator, created = User.objects.get_or_create(username=f"imported:{source}"[:150])
    if created:
        annotator.set_unusable_password()
        annotator.save(update_fields=["password"])
    hashes = [messages_hash(r.prompt) for r in records]
    prompts = _prompts(project, records, hashes, file_name)
    created_prompts = prompts.pop(None)
    for start in range(0, len(records), BATCH):
        chunk = list(
            zip(
                records[start : start + BATCH],
                hashes[start : start + BATCH],
                strict=False,
            )
        )
        tasks = RankingTask.objects.bulk_create(
            [
                RankingTask(
                    project=project,
                    prompt=prompts[h],
                    overlap=1,
                    ranking_count=1,
                    source=f"{file_name}:{r.line}",
                )
                for r, h in chunk
            ]
        )
        responses = Response.objects.bulk_create(
            [
                Response(task=task, policy=policy, text=text, position=i)
                for task, (r, _) in zip(tasks, chunk, strict=False)
                for i, text in enumerate(r.responses)
            ]
        )
        rankings, cursor = [], 0
        for task, (r, _) in zip(tasks, chunk, strict=False):
            ids = [resp.id for resp in responses[cursor : cursor + len(r.responses)]]
            cursor += len(r.responses)
            rankings.append(
                Ranking(
                    task=task,
                    annotator=annotator,
                    order=[[ids[i] for i in group] for group in r.order],
                    source=f"{file_name}:{r.line}",
                )
            )
        Ranking.objects.bulk_create(rankings)
    return created_prompts


def _prompts(
    project: Project, records: list[Record], hashes: list[str], file_name: str
) -> dict:
    """Return {hash: Prompt} for every record, creating the missing ones.

    The count of new prompts is stored under the key None.
    """
    wanted = set(hashes)
    found: dict = {}
    as_list = list(wanted)
    for start in range(0, len(as_list), BATCH):
        for prompt in Prompt.objects.filter(
            project=project, content_hash__in=as_list[start : start + BATCH]
        ):
            found[prompt.content_hash] = prompt
    new = {}
    for record, h in zip(records, hashes, strict=False):
        if h not in found and h not in new:
            new[h] = Prompt(
                project=project,
                messages=record.prompt,
                content_hash=h,
                source=f"{file_name}:{record.line}",
            )
    created = Prompt.objects.bulk_create(list(new.values()), batch_size=BATCH)
    found.update({p.content_hash: p for p in created})
    found[None] = len(created)
    return found


def iter_lines(report: ImportReport) -> Iterable[str]:
    """Yield the report as lines of text for a terminal."""
    yield (
        f"{report.source}: format {report.format}, {report.records} records, "
        f"{report.accepted} valid, {len(report.rejected)} rejected"
    )
    for item in report.rejected:
        yield f"  line {item['line']}: {item['reason']}"
    if report.is_applied:
        yield (
            f"imported {report.rankings_created} rankings, "
            f"{report.prompts_created} new prompts into {report.project.name}"
        )
    else:
        yield "nothing imported: fix the records above or pass --skip-invalid"
