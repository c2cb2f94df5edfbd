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
report: counts and a few samples per reason a record was dropped. A page or the
API queues the upload (`queue_corpus`) and the worker curates it (`build_corpus`,
run by `annotation.importing.run_import`), its job page showing the progress;
`manage.py import_corpus` curates in its own process (`create_corpus`).
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
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction

from annotation.audit import record as audit_record
from annotation.curation import CORPUS_FILTERS, Filters, curate
from annotation.importing import queue_upload
from annotation.models import Corpus, ImportReport, Project, normalise_messages
from annotation.prompt_files import Progress, Unreadable, check_suffix, iter_records

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_INFLATED_BYTES = 256 * 1024 * 1024
TEXT_FIELDS = ("text", "content")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")


def read_documents(
    name: str, path: Path, progress: Progress | None = None
) -> tuple[list[str], list[str], list[dict]]:
    """Return (documents, their labels, unreadable records) of a pre-training file at
    `path`, sent as `name`.

    Raise ValidationError when the whole file cannot be read.
    """
    if name.removesuffix(".gz").lower().endswith(".txt"):
        return _text_documents(name, path, progress)
    documents, labels, unreadable = [], [], []
    for line, record in _records(name, path, progress):
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


def _text_documents(
    name: str, path: Path, progress: Progress | None = None
) -> tuple[list[str], list[str], list[dict]]:
    """Split plain text into documents at blank lines (one a line if there are none).

    The non-blank lines come numbered; a gap in the numbers is a blank line. A file
    of one block (no blank line between its first and last text) is a document a
    line.
    """
    blocks: list[list[tuple[int, str]]] = []
    for number, line in _records(name, path, progress):
        if blocks and blocks[-1][-1][0] == number - 1:
            blocks[-1].append((number, line))
        else:
            blocks.append([(number, line)])
    if len(blocks) == 1:
        blocks = [[item] for item in blocks[0]]
    documents = ["\n".join(line for _, line in block).strip() for block in blocks]
    labels = [f"line {block[0][0]}" for block in blocks]
    return documents, labels, []


def read_demonstrations(
    name: str, path: Path, progress: Progress | None = None
) -> tuple[list[dict], list[str], list[dict]]:
    """Return (prompt/completion records as messages, their labels, unreadable ones)."""
    rows, labels, unreadable = [], [], []
    for line, record in _records(name, path, progress):
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


def _records(name: str, path: Path, progress: Progress | None = None):
    """Yield the file's records, at most IMPORT_MAX_RECORDS (then a ValidationError)."""
    records = iter_records(name, path, MAX_INFLATED_BYTES, progress)
    for count, item in enumerate(records):
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


def check_corpus(
    project: Project,
    name: str,
    *,
    kind: str,
    filters: dict[str, Any] | None,
    size: int,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> Filters:
    """Return the chosen filters of a corpus about to be made; raise ValidationError
    for a bad name, kind or filter, a name already taken or a file over `max_bytes`.
    """
    if not NAME.match(name or ""):
        raise ValidationError(
            f"corpus name must be 1-100 lowercase letters, digits, '-' or '_', got {name!r}"
        )
    if kind not in Corpus.Kind.values:
        raise ValidationError(f"kind must be one of {Corpus.Kind.values}, got {kind!r}")
    if size > max_bytes:
        raise ValidationError(
            f"the file has {size:,} bytes; the most is {max_bytes:,} (larger "
            "corpora: manage.py import_corpus, or split the file)"
        )
    if Corpus.objects.filter(project=project, name=name).exists():
        raise ValidationError(
            f"project {project.name} has a corpus named {name!r} already; choose another name"
        )
    return parse_filters(filters, kind)


def queue_corpus(
    project: Project,
    name: str,
    upload: UploadedFile,
    *,
    kind: str = Corpus.Kind.TEXT,
    filters: dict[str, Any] | None = None,
    user: AbstractBaseUser | None = None,
) -> ImportReport:
    """Check a corpus upload (`check_corpus`), stage it and queue its curation for
    the worker (`importing.queue_upload`); return the queued job, whose page follows
    the curation and then links the corpus (`build_corpus` makes it)."""
    chosen = check_corpus(
        project, name, kind=kind, filters=filters, size=upload.size or 0
    )
    check_suffix(upload.name or "")
    return queue_upload(
        project,
        upload,
        kind=ImportReport.Kind.CORPUS,
        options={"name": name, "kind": kind, "filters": chosen.to_dict()},
        user=user,
    )


def create_corpus(
    project: Project,
    name: str,
    upload: File,
    *,
    kind: str = Corpus.Kind.TEXT,
    filters: dict[str, Any] | None = None,
    user: AbstractBaseUser | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> Corpus:
    """Curate a file in this process and store what it keeps as the corpus `name`
    (`manage.py import_corpus`; pages and the API queue it: `queue_corpus`).

    Raise ValidationError as `check_corpus` and `build_corpus` do. A file that is
    not on disk is copied to a temporary one first.
    """
    chosen = check_corpus(
        project, name, kind=kind, filters=filters, size=upload.size, max_bytes=max_bytes
    )
    file_name = Path(upload.name or "upload.txt").name
    on_disk = getattr(upload.file, "name", None)
    if isinstance(on_disk, str) and Path(on_disk).is_file():
        return build_corpus(
            project,
            name,
            Path(on_disk),
            file_name,
            kind=kind,
            filters=chosen,
            user=user,
        )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload"
        with open(path, "wb") as out:
            for chunk in upload.chunks():
                out.write(chunk)
        return build_corpus(
            project, name, path, file_name, kind=kind, filters=chosen, user=user
        )


def build_corpus(
    project: Project,
    name: str,
    path: Path,
    file_name: str,
    *,
    kind: str,
    filters: Filters,
    user: AbstractBaseUser | None = None,
    progress: Progress | None = None,
) -> Corpus:
    """Curate the file at `path` (sent as `file_name`) and store what it keeps as the
    project's corpus `name`; return it.

    Raise ValidationError for a file unreadable as a whole, nothing kept, or a name
    taken meanwhile. Curation runs in the caller's process (~0.4 MB/s on a loaded
    2-core machine: the worker's job for a page or the API). The corpus file is
    written beside its final place and renamed into it; the row (and its audit
    entry) is written in one transaction, and a refused row removes the file.
    `progress`: see `curated_rows`.
    """
    rows, report = curated_rows(kind, file_name, path, filters, progress)
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
                filters=filters.to_dict(),
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
    kind: str,
    file_name: str,
    path: Path,
    filters: Filters,
    progress: Progress | None = None,
) -> tuple[list[dict], dict[str, Any]]:
    """Return the records of a file that pass the curation, and the curation's report.

    Raise ValidationError when none passes. `progress` is told the share done,
    reading being the first tenth and curating the rest, and the records read.
    """
    reading = None if progress is None else (lambda s, n: progress(s / 10, n))
    if kind == Corpus.Kind.TEXT:
        items, labels, unreadable = read_documents(file_name, path, reading)
        texts = items
    else:
        items, labels, unreadable = read_demonstrations(file_name, path, reading)
        texts = [demonstration_text(row) for row in items]
    total = len(texts) + len(unreadable)
    curating = (
        None
        if progress is None
        else (lambda done: progress(0.1 + 0.9 * done / max(1, len(texts)), total))
    )
    curated = curate(texts, filters, labels, progress=curating)
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
