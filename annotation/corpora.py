"""Corpora: a project's curated text files, for pre-training and for demonstrations.

A researcher uploads plain text, JSON, JSONL, CSV or Parquet (optionally gzip;
read by `annotation.prompt_files.iter_records`). For pre-training text a record is
a string or an object with `text` (or `content`); in a plain-text file documents
are separated by blank lines, and a file without blank lines holds one document a
line. For demonstrations a record has `prompt` and `completion`, each a string or
a message list. The records go through the curation of `annotation.curation`
(quality filters, exact and MinHash near duplicates, the harm flag: with
`CORPUS_FILTERS` by default); the kept ones are written as JSONL (`{"text"}` or
conversational `{"prompt", "completion"}`) under EXPORT_DIR/corpora by atomic
rename, and the `Corpus` row records the file's SHA-256, the filters and the
report: counts and a few samples per reason a record was dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction

from annotation.audit import record as audit_record
from annotation.curation import CORPUS_FILTERS, Filters, curate
from annotation.models import Corpus, Project, normalise_messages
from annotation.prompt_files import Unreadable, gunzip, iter_records

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_INFLATED_BYTES = 256 * 1024 * 1024
TEXT_FIELDS = ("text", "content")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")


def read_documents(name: str, data: bytes) -> tuple[list[str], list[str], list[dict]]:
    """Return (documents, their labels, unreadable records) of a pre-training file.

    Raise ValidationError when the whole file cannot be read.
    """
    if name.removesuffix(".gz").lower().endswith(".txt"):
        return _text_documents(name, data)
    documents, labels, unreadable = [], [], []
    for line, record in _records(name, data):
        if isinstance(record, dict):
            record = next(
                (record[k] for k in TEXT_FIELDS if isinstance(record.get(k), str)),
                None,
            )
        if isinstance(record, Unreadable) or not isinstance(record, str):
            reason = (
                record.reason
                if isinstance(record, Unreadable)
                else f"expected a string or an object with {' or '.join(TEXT_FIELDS)}"
            )
            unreadable.append({"line": line, "reason": reason})
            continue
        documents.append(record)
        labels.append(f"line {line}")
    return documents, labels, unreadable


def _text_documents(name: str, data: bytes) -> tuple[list[str], list[str], list[dict]]:
    """Split plain text into documents at blank lines (one a line if there are none)."""
    raw = gunzip(name, data, MAX_INFLATED_BYTES) if name.endswith(".gz") else data
    lines = raw.decode("utf-8-sig", errors="replace").splitlines()
    filled = [i for i, line in enumerate(lines) if line.strip()]
    paragraphs = bool(filled) and any(
        not line.strip() for line in lines[filled[0] : filled[-1]]
    )
    documents: list[str] = []
    labels: list[str] = []
    current: list[str] = []
    for number, line in enumerate([*lines, ""], start=1):
        if line.strip():
            current.append(line)
            if paragraphs:
                continue
        if current:
            start = number - len(current) + (0 if paragraphs else 1)
            documents.append("\n".join(current).strip())
            labels.append(f"line {start}")
            current = []
    if len(documents) > settings.IMPORT_MAX_RECORDS:
        raise ValidationError(
            f"{name} holds more than {settings.IMPORT_MAX_RECORDS} documents "
            "(IMPORT_MAX_RECORDS); split it into smaller files"
        )
    return documents, labels, []


def read_demonstrations(
    name: str, data: bytes
) -> tuple[list[dict], list[str], list[dict]]:
    """Return (prompt/completion records as messages, their labels, unreadable ones)."""
    rows, labels, unreadable = [], [], []
    for line, record in _records(name, data):
        try:
            if isinstance(record, Unreadable):
                raise ValidationError(record.reason)
            if not isinstance(record, dict) or not {"prompt", "completion"} <= set(
                record
            ):
                raise ValidationError("expected an object with prompt and completion")
            completion = record["completion"]
            if isinstance(completion, str):
                completion = [{"role": "assistant", "content": completion}]
            row = {
                "prompt": normalise_messages(record["prompt"]),
                "completion": normalise_messages(completion),
            }
        except ValidationError as exc:
            unreadable.append({"line": line, "reason": exc.messages[0]})
            continue
        rows.append(row)
        labels.append(f"line {line}")
    return rows, labels, unreadable


def _records(name: str, data: bytes):
    """Yield the file's records, at most IMPORT_MAX_RECORDS (then a ValidationError)."""
    for count, item in enumerate(iter_records(name, data, MAX_INFLATED_BYTES)):
        if count >= settings.IMPORT_MAX_RECORDS:
            raise ValidationError(
                f"{name} holds more than {settings.IMPORT_MAX_RECORDS} records "
                "(IMPORT_MAX_RECORDS); split it into smaller files"
            )
        yield item


def demonstration_text(row: dict) -> str:
    """Return the text a demonstration is curated by: its prompt, then its completion."""
    return "\n".join(m["content"] for m in row["prompt"] + row["completion"])


def parse_filters(values: dict[str, Any] | None, kind: str) -> Filters:
    """Return the corpus defaults with `values` over them; ValidationError if bad."""
    data = {**CORPUS_FILTERS.to_dict(), **(values or {})}
    try:
        return Filters.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{kind} filters: {exc}") from None


def create_corpus(
    project: Project,
    name: str,
    upload: UploadedFile,
    *,
    kind: str = Corpus.Kind.TEXT,
    filters: dict[str, Any] | None = None,
    user: AbstractBaseUser | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> Corpus:
    """Curate an uploaded file and store what it keeps as the project's corpus `name`.

    Raise ValidationError for a bad name, kind or filter, a name already taken, a
    file over `max_bytes` or unreadable as a whole, or nothing kept. Curation runs
    here, in the caller's process (~0.4 MB/s on a loaded 2-core machine): a page
    or the API takes files up to MAX_UPLOAD_BYTES, the `import_corpus` command
    larger ones. The file
    is written beside its final place and renamed into it; the row (and its audit
    entry) is written in one transaction, and a refused row removes the file.
    """
    if not NAME.match(name or ""):
        raise ValidationError(
            f"corpus name must be 1-100 lowercase letters, digits, '-' or '_', got {name!r}"
        )
    if kind not in Corpus.Kind.values:
        raise ValidationError(f"kind must be one of {Corpus.Kind.values}, got {kind!r}")
    if upload.size > max_bytes:
        raise ValidationError(
            f"the file has {upload.size:,} bytes; the most is {max_bytes:,} (larger "
            "corpora: manage.py import_corpus, or split the file)"
        )
    if Corpus.objects.filter(project=project, name=name).exists():
        raise ValidationError(
            f"project {project.name} has a corpus named {name!r} already; choose another name"
        )
    chosen = parse_filters(filters, kind)
    file_name = Path(upload.name or "upload.txt").name
    data = upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValidationError(f"the file has more than {max_bytes:,} bytes")
    rows, report = curated_rows(kind, file_name, data, chosen)
    path, sha256 = _write_file(project, name, rows)
    try:
        with transaction.atomic():
            corpus = Corpus.objects.create(
                project=project,
                name=name,
                kind=kind,
                source=file_name[:300],
                path=str(path),
                sha256=sha256,
                records=report["total"] + report["unreadable_count"],
                kept=len(rows),
                filters=chosen.to_dict(),
                report=report,
                created_by=user,
            )
            audit_record(
                user,
                "corpus.create",
                obj=corpus,
                project=project,
                after={"name": name, "kind": kind, "sha256": sha256, "kept": len(rows)},
            )
    except IntegrityError:
        path.unlink(missing_ok=True)
        raise ValidationError(
            f"project {project.name} has a corpus named {name!r} already; choose another name"
        ) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return corpus


def curated_rows(
    kind: str, file_name: str, data: bytes, filters: Filters
) -> tuple[list[dict], dict[str, Any]]:
    """Return the records of a file that pass the curation, and the curation's report.

    Raise ValidationError when none passes.
    """
    if kind == Corpus.Kind.TEXT:
        items, labels, unreadable = read_documents(file_name, data)
        texts = items
    else:
        items, labels, unreadable = read_demonstrations(file_name, data)
        texts = [demonstration_text(row) for row in items]
    curated = curate(texts, filters, labels)
    if not curated.kept:
        raise ValidationError(
            f"{file_name}: no record passed the curation ({len(texts)} readable, "
            f"{len(unreadable)} unreadable); nothing stored"
        )
    rows = [
        {"text": items[i]} if kind == Corpus.Kind.TEXT else items[i]
        for i in curated.kept
    ]
    report = curated.report(len(texts))
    report["unreadable"] = unreadable[:50]
    report["unreadable_count"] = len(unreadable)
    return rows, report


def _write_file(project: Project, name: str, rows: list[dict]) -> tuple[Path, str]:
    """Write the rows as JSONL beside their final place, rename; return (path, SHA-256)."""
    folder = Path(settings.EXPORT_DIR) / "corpora" / project.name
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            for row in rows:
                line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
                digest.update(line)
                out.write(line)
            out.flush()
            os.fsync(out.fileno())
        sha256 = digest.hexdigest()
        path = folder / f"{name}-{sha256[:12]}.jsonl"
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, sha256
