"""Writing a snapshot to disk in the format a trainer reads, streamed and atomically.

Formats (`fmt`): `trl` preference pairs (conversational or standard `style`, explicit
or implicit `prompt`), `kto` unpaired rows (`prompt`, `completion`, `label`),
`ranking` (the full order with tie groups), `hh` (HH-RLHF `chosen`/`rejected`
transcripts) and `sft` demonstrations (rewrites and top-ranked responses). Each goes
out as JSONL (optionally gzipped), Parquet (pyarrow's streaming writer) or a Hugging
Face `datasets` folder that `load_from_disk` opens, with a dataset card beside it.
Rows are read from the database in chunks and written as they come, so memory stays
flat as the snapshot grows; the file appears under its final name by `os.replace`.

Downloads (the pages and the API) send a file built once per snapshot and options
(`export_path`). A snapshot of up to REQUEST_MAX_PAIRS pairs is built in the
request (a fraction of a second); a larger one's build is a job for the worker
(`queue_export`, `run_export`, a `SnapshotExport` row), since a million pairs take
some 10 s to write, past what a web request may hold.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import IO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError

from annotation.models import (
    RankingTask,
    Response,
    Snapshot,
    SnapshotExport,
    SnapshotPair,
    SnapshotRanking,
)
from config.workers import (
    HEARTBEAT_SECONDS,
    LOST_AFTER_SECONDS,
    fail_lost,
    queue_job,
    run_job,
)

FORMATS = ("trl", "kto", "ranking", "hh", "sft")
STYLES = ("conversational", "standard")
PROMPT_MODES = ("explicit", "implicit")
FILE_FORMATS = ("jsonl", "jsonl.gz", "parquet", "hf")
CHUNK = 5000
DOWNLOAD_TYPES = {
    "jsonl": "application/x-ndjson",
    "jsonl.gz": "application/gzip",
    "parquet": "application/vnd.apache.parquet",
    "hf": "application/zip",
}
# Told the rows written so far.
RowsDone = Callable[[int], None]


def file_format_for(path: str | Path) -> str:
    """Return the file format a path's name implies (a name without suffix is a folder)."""
    name = Path(path).name
    if name.endswith(".jsonl.gz"):
        return "jsonl.gz"
    if name.endswith(".jsonl") or name.endswith(".json"):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if "." not in name:
        return "hf"
    raise ValidationError(
        f"cannot tell the file format of {name!r}; use .jsonl, .jsonl.gz, .parquet, "
        "a folder name without a suffix, or pass file_format"
    )


def check_options(fmt: str, style: str, prompt: str, file_format: str) -> None:
    """Raise ValidationError naming any option outside its allowed values."""
    for label, value, allowed in (
        ("fmt", fmt, FORMATS),
        ("style", style, STYLES),
        ("prompt", prompt, PROMPT_MODES),
        ("file_format", file_format, FILE_FORMATS),
    ):
        if value not in allowed:
            raise ValidationError(f"{label} must be one of {allowed}, got {value!r}")


def prompt_text(messages: list[dict]) -> str:
    """Return a prompt as plain text: one user turn as itself, else an HH transcript."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return transcript(messages) + "\n\nAssistant:"


def transcript(messages: list[dict]) -> str:
    """Return messages as `\\n\\nHuman: …\\n\\nAssistant: …` turns (system turns lead)."""
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "".join(f"\n\n{names[m['role']]}: {m['content']}" for m in messages)


def iter_chunks(
    snapshot: Snapshot,
    *,
    fmt: str = "trl",
    style: str = "conversational",
    prompt: str = "explicit",
) -> Iterator[dict[str, list]]:
    """Yield the snapshot's rows as column chunks ({column: values}) of up to CHUNK rows.

    Values repeated across rows (a prompt, a response's text) are the same Python
    object within a chunk, so writers can encode each once.
    """
    check_options(fmt, style, prompt, "jsonl")
    if fmt in ("trl", "hh"):
        yield from _pair_chunks(snapshot, fmt, style, prompt)
        if snapshot.rewrite_rule == "chosen":
            names = arrow_schema(fmt, style, prompt).names
            for batch in _batched(
                _rewrite_pair_rows(snapshot, fmt, style, prompt), CHUNK
            ):
                yield {name: [row[name] for row in batch] for name in names}
        return
    if fmt == "kto":
        rows = _unpaired_rows(snapshot, style)
    elif fmt == "ranking":
        rows = _ranking_rows(snapshot, style)
    else:
        rows = _sft_rows(snapshot, style)
    names = arrow_schema(fmt, style, prompt).names
    for batch in _batched(rows, CHUNK):
        yield {name: [row[name] for row in batch] for name in names}


def iter_rows(
    snapshot: Snapshot,
    *,
    fmt: str = "trl",
    style: str = "conversational",
    prompt: str = "explicit",
) -> Iterator[dict]:
    """Yield the snapshot's rows in the given format, reading the database in chunks."""
    for chunk in iter_chunks(snapshot, fmt=fmt, style=style, prompt=prompt):
        names = list(chunk)
        for values in zip(*chunk.values(), strict=False):
            yield dict(zip(names, values, strict=False))


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _pair_chunks(
    snapshot: Snapshot, fmt: str, style: str, prompt: str
) -> Iterator[dict]:
    """Yield pair rows as columns, a chunk of pairs and their tasks and responses at a time.

    The pairs are read as plain ids; each chunk then reads its tasks (prompt, round)
    and responses (text, policy) once, so a text shared by several pairs is fetched
    and built once per chunk.
    """
    names = arrow_schema(fmt, style, prompt).names
    pairs = (
        SnapshotPair.objects.filter(snapshot=snapshot)
        .order_by("id")
        .values_list(
            "task_id",
            "chosen_id",
            "rejected_id",
            "margin",
            "annotator_label",
            "ranking_id",
        )
        .iterator(chunk_size=CHUNK)
    )
    for rows in _batched(pairs, CHUNK):
        tasks = {
            task_id: (prompt_id, messages, number, policy)
            for task_id, prompt_id, messages, number, policy in by_ids(
                RankingTask.objects, {row[0] for row in rows}
            ).values_list(
                "id",
                "prompt_id",
                "prompt__messages",
                "round__number",
                "round__policy__name",
            )
        }
        responses = dict(
            (rid, (text, policy))
            for rid, text, policy in by_ids(
                Response.objects, {rid for row in rows for rid in row[1:3]}
            ).values_list("id", "text", "policy__name")
        )
        heads: dict[int, object] = {}  # task id -> what goes before a completion
        prompts: dict[int, object] = {}  # task id -> prompt column value
        completions: dict[int, object] = {}  # response id -> chosen/rejected value
        for task_id, chosen_id, rejected_id, *_ in rows:
            if task_id not in heads:
                messages = tasks[task_id][1]
                heads[task_id] = _head(messages, fmt, style, prompt)
                prompts[task_id] = (
                    messages if style == "conversational" else prompt_text(messages)
                )
            for rid in (chosen_id, rejected_id):
                if rid not in completions:
                    completions[rid] = _pair_completion(
                        heads[task_id], responses[rid][0], fmt, style, prompt
                    )
        task_of = [tasks[row[0]] for row in rows]
        chosen_policy = [responses[row[1]][1] for row in rows]
        columns = {
            "prompt": [prompts[row[0]] for row in rows],
            "chosen": [completions[row[1]] for row in rows],
            "rejected": [completions[row[2]] for row in rows],
            "margin": [row[3] for row in rows],
            "annotator": [row[4] for row in rows],
            "round": [task[2] for task in task_of],
            "policy": [
                task[3] or c for task, c in zip(task_of, chosen_policy, strict=False)
            ],
            "chosen_policy": chosen_policy,
            "rejected_policy": [responses[row[2]][1] for row in rows],
            "prompt_id": [task[0] for task in task_of],
            "ranking_id": [row[5] for row in rows],
            "chosen_id": [row[1] for row in rows],
            "rejected_id": [row[2] for row in rows],
        }
        yield {name: columns[name] for name in names}


def by_ids(manager, ids: set[int]):
    """Return a queryset of the rows with these ids, as a range when they are dense.

    A chunk's tasks and responses were mostly created together, so their ids form a
    near-contiguous range; a range scan skips preparing thousands of IN parameters.
    """
    low, high = min(ids), max(ids)
    if high - low < 2 * len(ids):
        return manager.filter(id__gte=low, id__lte=high)
    return manager.filter(id__in=ids)


def _head(messages: list[dict], fmt: str, style: str, prompt: str) -> object:
    """Return what precedes each completion of a prompt in a pair row (None: nothing)."""
    if fmt == "hh":
        return transcript(messages) + "\n\nAssistant: "
    if prompt == "explicit":
        return None
    if style == "conversational":
        return messages
    return prompt_text(messages) + (" " if len(messages) > 1 else "\n")


def _pair_completion(
    head: object, text: str, fmt: str, style: str, prompt: str
) -> object:
    """Return a response as the chosen/rejected value of a pair row."""
    if fmt == "hh":
        return head + text
    if style == "conversational":
        message = [{"role": "assistant", "content": text}]
        return message if head is None else head + message
    return text if head is None else head + text


def _completion(text: str, style: str) -> list[dict] | str:
    return (
        [{"role": "assistant", "content": text}] if style == "conversational" else text
    )


def _prompt(messages: list[dict], style: str) -> list[dict] | str:
    return messages if style == "conversational" else prompt_text(messages)


def _unpaired_rows(snapshot: Snapshot, style: str) -> Iterator[dict]:
    """Yield each response once, desirable when it won more of its pairs than it lost.

    A response that won and lost equally often says nothing and is left out. Under
    the rewrite rule "chosen", a rewrite's pairs count too and each rewrite follows
    as a desirable row (`policy` "rewrite", no `response_id`).
    """
    from annotation.snapshots import rewrite_pairs

    score: dict[int, int] = {}
    for chosen, rejected in (
        SnapshotPair.objects.filter(snapshot=snapshot)
        .values_list("chosen_id", "rejected_id")
        .iterator(chunk_size=CHUNK)
    ):
        score[chosen] = score.get(chosen, 0) + 1
        score[rejected] = score.get(rejected, 0) - 1
    chosen_rewrites = snapshot.rewrite_rule == "chosen"
    for order, _ in _orders(snapshot) if chosen_rewrites else ():
        for rejected, _ in rewrite_pairs(
            order.order, order.rewrite, snapshot.pair_rule
        ):
            score[rejected] = score.get(rejected, 0) - 1
    ids = sorted(rid for rid, s in score.items() if s != 0)
    for start in range(0, len(ids), CHUNK):
        batch = ids[start : start + CHUNK]
        for rid, text, prompt_id, messages, policy, round_number in (
            Response.objects.filter(id__in=batch)
            .order_by("id")
            .values_list(
                "id",
                "text",
                "task__prompt_id",
                "task__prompt__messages",
                "policy__name",
                "task__round__number",
            )
        ):
            yield {
                "prompt": _prompt(messages, style),
                "completion": _completion(text, style),
                "label": score[rid] > 0,
                "prompt_id": prompt_id,
                "response_id": rid,
                "policy": policy,
                "round": round_number,
            }
    # A second pass over the orders, so that memory stays flat as the snapshot grows.
    for order, _ in _orders(snapshot) if chosen_rewrites else ():
        if not order.rewrite.strip():
            continue
        yield {
            "prompt": _prompt(order.task.prompt.messages, style),
            "completion": _completion(order.rewrite, style),
            "label": True,
            "prompt_id": order.task.prompt_id,
            "response_id": None,
            "policy": "rewrite",
            "round": order.task.round.number if order.task.round_id else None,
        }


def _orders(
    snapshot: Snapshot,
) -> Iterator[tuple[SnapshotRanking, dict[int, tuple[str, str]]]]:
    """Yield each frozen order with its responses' (text, policy), chunk by chunk."""
    query = (
        SnapshotRanking.objects.filter(snapshot=snapshot)
        .select_related("task__prompt", "task__round__policy")
        .order_by("id")
    )
    batch: list[SnapshotRanking] = []

    def flush() -> Iterator:
        task_ids = {o.task_id for o in batch}
        texts = {
            rid: (text, policy)
            for rid, text, policy in Response.objects.filter(
                task_id__in=task_ids
            ).values_list("id", "text", "policy__name")
        }
        for order in batch:
            yield order, texts

    for order in query.iterator(chunk_size=CHUNK):
        batch.append(order)
        if len(batch) >= CHUNK:
            yield from flush()
            batch = []
    if batch:
        yield from flush()


def _rewrite_pair_rows(
    snapshot: Snapshot, fmt: str, style: str, prompt: str
) -> Iterator[dict]:
    """Yield the pairs a rewrite is chosen in (rewrite rule "chosen"), after the
    response pairs: `chosen_policy` "rewrite" and no `chosen_id`."""
    from annotation.snapshots import rewrite_pairs

    for order, texts in _orders(snapshot):
        pairs = rewrite_pairs(order.order, order.rewrite, snapshot.pair_rule)
        if not pairs:
            continue
        task = order.task
        head = _head(task.prompt.messages, fmt, style, prompt)
        chosen = _pair_completion(head, order.rewrite, fmt, style, prompt)
        for rejected_id, margin in pairs:
            text, policy = texts[rejected_id]
            yield {
                "prompt": _prompt(task.prompt.messages, style),
                "chosen": chosen,
                "rejected": _pair_completion(head, text, fmt, style, prompt),
                "margin": margin,
                "annotator": order.annotator_label,
                "round": task.round.number if task.round_id else None,
                "policy": task.round.policy.name
                if task.round_id and task.round.policy_id
                else "rewrite",
                "chosen_policy": "rewrite",
                "rejected_policy": policy,
                "prompt_id": task.prompt_id,
                "ranking_id": order.ranking_id,
                "chosen_id": None,
                "rejected_id": rejected_id,
            }


def _ranking_rows(snapshot: Snapshot, style: str) -> Iterator[dict]:
    for order, texts in _orders(snapshot):
        ids = [rid for group in order.order for rid in group]
        yield {
            "prompt": _prompt(order.task.prompt.messages, style),
            "responses": [
                {"id": rid, "text": texts[rid][0], "policy": texts[rid][1]}
                for rid in ids
            ],
            "order": order.order,
            "annotator": order.annotator_label,
            "round": order.task.round.number if order.task.round_id else None,
            "prompt_id": order.task.prompt_id,
            "ranking_id": order.ranking_id,
        }


def _sft_rows(snapshot: Snapshot, style: str) -> Iterator[dict]:
    """Yield rewrites and each task's top-ranked responses, each text once per task.

    Under the rewrite rule "chosen" a rewrite ranks above its order's best, so the
    rewrite alone is that order's demonstration: the responses it corrects are not
    (under "sft" both are, the rewrite beside the best the policy gave).
    """
    seen: set[tuple[int, str]] = set()
    replaces = snapshot.rewrite_rule == "chosen"
    for order, texts in _orders(snapshot):
        candidates = []
        rewritten = bool(order.rewrite.strip())
        if rewritten:
            candidates.append((order.rewrite, "rewrite", None, ""))
        best = order.order[0] if len(order.order) > 1 else []
        for rid in [] if rewritten and replaces else best:
            candidates.append((texts[rid][0], "top_ranked", rid, texts[rid][1]))
        for text, origin, rid, policy in candidates:
            key = (order.task_id, text)
            if key in seen:
                continue
            seen.add(key)
            yield {
                "prompt": _prompt(order.task.prompt.messages, style),
                "completion": _completion(text, style),
                "origin": origin,
                "annotator": order.annotator_label,
                "prompt_id": order.task.prompt_id,
                "response_id": rid,
                "policy": policy,
                "round": order.task.round.number if order.task.round_id else None,
            }


def arrow_schema(fmt: str, style: str, prompt: str):
    """Return the pyarrow schema of a format, so every Parquet batch agrees."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    text = pa.list_(message) if style == "conversational" else pa.string()
    if fmt == "hh":
        return pa.schema(
            [("chosen", pa.string()), ("rejected", pa.string())] + _pair_extra(pa)
        )
    if fmt == "trl":
        head = [("prompt", text)] if prompt == "explicit" else []
        return pa.schema(
            head + [("chosen", text), ("rejected", text)] + _pair_extra(pa)
        )
    if fmt == "kto":
        return pa.schema(
            [
                ("prompt", text),
                ("completion", text),
                ("label", pa.bool_()),
                ("prompt_id", pa.int64()),
                ("response_id", pa.int64()),
                ("policy", pa.string()),
                ("round", pa.int64()),
            ]
        )
    if fmt == "ranking":
        response = pa.struct(
            [("id", pa.int64()), ("text", pa.string()), ("policy", pa.string())]
        )
        return pa.schema(
            [
                ("prompt", text),
                ("responses", pa.list_(response)),
                ("order", pa.list_(pa.list_(pa.int64()))),
                ("annotator", pa.string()),
                ("round", pa.int64()),
                ("prompt_id", pa.int64()),
                ("ranking_id", pa.int64()),
            ]
        )
    return pa.schema(
        [
            ("prompt", text),
            ("completion", text),
            ("origin", pa.string()),
            ("annotator", pa.string()),
            ("prompt_id", pa.int64()),
            ("response_id", pa.int64()),
            ("policy", pa.string()),
            ("round", pa.int64()),
        ]
    )


def _pair_extra(pa) -> list:
    return [
        ("margin", pa.float64()),
        ("annotator", pa.string()),
        ("round", pa.int64()),
        ("policy", pa.string()),
        ("chosen_policy", pa.string()),
        ("rejected_policy", pa.string()),
        ("prompt_id", pa.int64()),
        ("ranking_id", pa.int64()),
        ("chosen_id", pa.int64()),
        ("rejected_id", pa.int64()),
    ]


def _json_fragments(
    values: list, dumps, kind: str | None = None, by_id: dict[int, str] | None = None
) -> list[str]:
    """Return each value of a column as JSON text, encoding a repeated value once.

    `kind` is the column's type when known ("int", "float", "str"), else found out;
    `by_id` memoises lists and dicts across the columns of one chunk (a response is
    often chosen in one row and rejected in another).
    """
    if kind is None:
        types = {type(v) for v in values} - {type(None)}
        kind = {frozenset({int}): "int", frozenset({float}): "float"}.get(
            frozenset(types), "str" if types == {str} else "object"
        )
    if kind in ("int", "float"):
        to_text = str if kind == "int" else float.__repr__
        if None not in values:
            return list(map(to_text, values))
        return ["null" if v is None else to_text(v) for v in values]
    if kind == "str":
        by_value: dict[str, str] = {}
        return [
            "null" if v is None else by_value.get(v) or by_value.setdefault(v, dumps(v))
            for v in values
        ]
    # Lists, dicts, bools: a value shared by rows is the same object (see iter_chunks).
    by_id = {} if by_id is None else by_id
    return [
        by_id[key] if (key := id(v)) in by_id else by_id.setdefault(key, dumps(v))
        for v in values
    ]


def _kinds(schema) -> dict[str, str]:
    """Return the JSON kind of each column of an arrow schema."""
    import pyarrow as pa

    kinds = {}
    for field in schema:
        if pa.types.is_integer(field.type):
            kinds[field.name] = "int"
        elif pa.types.is_floating(field.type):
            kinds[field.name] = "float"
        elif pa.types.is_string(field.type):
            kinds[field.name] = "str"
        else:
            kinds[field.name] = "object"
    return kinds


def write_jsonl(chunks: Iterable[dict[str, list]], out: IO[str], schema=None) -> int:
    """Write column chunks as JSON lines; return how many rows."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    kinds = _kinds(schema) if schema is not None else {}
    count = 0
    for chunk in chunks:
        template = "{" + ",".join(f"{dumps(name)}:%s" for name in chunk) + "}"
        shared: dict[int, str] = {}
        encoded = [
            _json_fragments(values, dumps, kinds.get(name), shared)
            for name, values in chunk.items()
        ]
        lines = [template % row for row in zip(*encoded, strict=False)]
        if lines:
            out.write("\n".join(lines))
            out.write("\n")
        count += len(lines)
    return count


def write_parquet(chunks: Iterable[dict[str, list]], path: Path, schema) -> int:
    """Write column chunks to Parquet, one record batch per chunk; return how many rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    count = 0
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        for chunk in chunks:
            writer.write_table(pa.Table.from_pydict(chunk, schema=schema))
            count += len(next(iter(chunk.values()), []))
        if count == 0:
            writer.write_table(schema.empty_table())
    return count


def export_snapshot(
    snapshot: Snapshot,
    path: str | Path,
    *,
    fmt: str = "trl",
    style: str = "conversational",
    prompt: str = "explicit",
    file_format: str | None = None,
    card: bool = True,
    progress: RowsDone | None = None,
) -> Path:
    """Write the snapshot to `path` in `fmt` and return the path.

    The data go to a temporary name in the same folder and are renamed into place, so
    an interrupted export leaves nothing under the final name. A dataset card goes in
    the folder (`hf`) or beside the file as `<name>.README.md`. `progress` is told the
    rows written so far after each chunk.
    """
    path = Path(path)
    file_format = file_format or file_format_for(path)
    check_options(fmt, style, prompt, file_format)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = iter_chunks(snapshot, fmt=fmt, style=style, prompt=prompt)
    if progress is not None:
        rows = _counted(rows, progress)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        if file_format == "hf":
            count = _write_hf(rows, tmp_dir / "data", arrow_schema(fmt, style, prompt))
            if card:
                (tmp_dir / "data" / "README.md").write_text(
                    dataset_card(snapshot, fmt, style, prompt, count), encoding="utf-8"
                )
            _replace_dir(tmp_dir / "data", path)
        else:
            tmp = tmp_dir / path.name
            if file_format == "parquet":
                count = write_parquet(rows, tmp, arrow_schema(fmt, style, prompt))
            elif file_format == "jsonl.gz":
                with gzip.open(tmp, "wt", encoding="utf-8") as out:
                    count = write_jsonl(rows, out, arrow_schema(fmt, style, prompt))
            else:
                with open(tmp, "w", encoding="utf-8") as out:
                    count = write_jsonl(rows, out, arrow_schema(fmt, style, prompt))
            os.replace(tmp, path)
            if card:
                card_path = card_path_for(path)
                tmp_card = tmp_dir / card_path.name
                tmp_card.write_text(
                    dataset_card(snapshot, fmt, style, prompt, count), encoding="utf-8"
                )
                os.replace(tmp_card, card_path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def _counted(
    chunks: Iterable[dict[str, list]], progress: RowsDone
) -> Iterator[dict[str, list]]:
    done = 0
    for chunk in chunks:
        yield chunk
        done += len(next(iter(chunk.values()), []))
        progress(done)


def card_path_for(path: Path) -> Path:
    """Return where the dataset card of a file export goes."""
    stem = path.name.split(".")[0]
    return path.with_name(f"{stem}.README.md")


def _write_hf(rows: Iterable[dict[str, list]], folder: Path, schema) -> int:
    """Write a `datasets` folder via a Parquet file, memory-mapped, never all in RAM."""
    import datasets

    parquet = folder.parent / "rows.parquet"
    count = write_parquet(rows, parquet, schema)
    dataset = datasets.Dataset.from_parquet(
        str(parquet), cache_dir=str(folder.parent / "cache"), keep_in_memory=False
    )
    dataset.save_to_disk(str(folder))
    return count


def _replace_dir(src: Path, dest: Path) -> None:
    """Move a finished folder into place; an older folder of that name is removed after."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dest)


def dataset_card(
    snapshot: Snapshot, fmt: str, style: str, prompt: str, count: int | None
) -> str:
    """Return a Markdown dataset card: filter, rules, counts, agreement, vote merging."""
    from annotation.snapshots import (
        DEDUP_RULES,
        MARGIN_RULES,
        PAIR_RULES,
        REWRITE_RULES,
        TIE_RULES,
    )

    stats = snapshot.stats or {}
    columns = ", ".join(f"`{name}`" for name in arrow_schema(fmt, style, prompt).names)
    lines = [
        "---",
        "license: other",
        "tags: [preference, rlhf, human-feedback]",
        "---",
        f"# {snapshot.project.name} / {snapshot.name}",
        "",
        f"Preference data frozen from project `{snapshot.project.name}` on "
        f"{snapshot.created_at:%Y-%m-%d %H:%M} UTC"
        + (f" by {snapshot.created_by}" if snapshot.created_by else "")
        + ".",
        "",
        f"- Snapshot SHA-256: `{snapshot.sha256}`",
        f"- Pairs in the snapshot: {snapshot.row_count}"
        + (f"; rows in this file: {count}" if count is not None else ""),
        f"- Format: `{fmt}`, style `{style}`, prompt `{prompt}`; columns {columns}",
        f"- Pair rule: `{snapshot.pair_rule}` ({PAIR_RULES.get(snapshot.pair_rule, '')})",
        f"- Tie rule: `{snapshot.tie_rule}` ({TIE_RULES.get(snapshot.tie_rule, '')})",
        f"- Deduplication: `{snapshot.dedup_rule}` ({DEDUP_RULES.get(snapshot.dedup_rule, '')})",
        f"- Margin: `{snapshot.margin_rule}` ({MARGIN_RULES.get(snapshot.margin_rule, '')})",
        f"- Rewrites: `{snapshot.rewrite_rule}` "
        f"({REWRITE_RULES.get(snapshot.rewrite_rule, '')}); "
        f"{stats.get('rewrites', 0)} rewrites, {stats.get('rewrite_pairs', 0)} rewrite pairs",
        f"- Votes merged: {stats.get('votes_merged', 'n/a')}",
        f"- Tasks: {stats.get('tasks', 'n/a')}, prompts: {stats.get('prompts', 'n/a')}, "
        f"orders: {stats.get('orders', 'n/a')}, annotators: {stats.get('annotators', 'n/a')}",
        f"- Mean task agreement: {stats.get('mean_task_agreement', 'n/a')}",
        "",
        "## Filter",
        "",
        "```json",
        json.dumps(snapshot.filter, indent=2, sort_keys=True),
        "```",
        "",
        "Annotator ids are pseudonymous and stable within this snapshot only.",
        "",
    ]
    return "\n".join(lines)


def push_to_hub(folder: Path, repo_id: str, token: str, *, private: bool = True) -> str:
    """Push an exported `datasets` folder and its card to the Hub; return the repo URL.

    Only called when the user gave a token; nothing in the test suite calls it.
    """
    import datasets
    from huggingface_hub import HfApi

    if not token:
        raise ValidationError(
            "pushing to the Hub needs a token; pass --hub-token or set HF_TOKEN"
        )
    datasets.load_from_disk(str(folder)).push_to_hub(
        repo_id, token=token, private=private
    )
    card = folder / "README.md"
    if card.exists():
        HfApi(token=token).upload_file(
            path_or_fileobj=str(card),
            path_in_repo="README.md",
            repo_id=repo_id,
            repo_type="dataset",
        )
    return f"https://huggingface.co/datasets/{repo_id}"


def export_path(
    snapshot: Snapshot, *, fmt: str, style: str, prompt: str, file_format: str
) -> Path:
    """Return the file under EXPORT_DIR that holds the snapshot's export in these
    options once it is built (a zip of the folder for `hf`)."""
    stem = f"{snapshot.pk}-{snapshot.sha256[:12]}-{fmt}-{style}-{prompt}"
    return (
        Path(settings.EXPORT_DIR)
        / "snapshots"
        / f"{stem}.{download_suffix(file_format)}"
    )


def cached_export(
    snapshot: Snapshot,
    *,
    fmt: str,
    style: str,
    prompt: str,
    file_format: str,
    progress: RowsDone | None = None,
) -> Path:
    """Return a file under EXPORT_DIR holding the export, written once per options.

    Snapshots are immutable, so an export with the same options never changes; an
    `hf` folder is returned zipped, for download.
    """
    check_options(fmt, style, prompt, file_format)
    target = export_path(
        snapshot, fmt=fmt, style=style, prompt=prompt, file_format=file_format
    )
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if file_format != "hf":
        return export_snapshot(
            snapshot,
            target,
            fmt=fmt,
            style=style,
            prompt=prompt,
            file_format=file_format,
            progress=progress,
        )
    stem = target.name.removesuffix(".zip")
    with tempfile.TemporaryDirectory(
        prefix=f".{target.name}.", dir=target.parent
    ) as tmp:
        export_snapshot(
            snapshot,
            Path(tmp) / stem,
            fmt=fmt,
            style=style,
            prompt=prompt,
            progress=progress,
        )
        archive = shutil.make_archive(str(Path(tmp) / stem), "zip", tmp, stem)
        os.replace(archive, target)
    return target


def ready_export(
    snapshot: Snapshot, *, fmt: str, style: str, prompt: str, file_format: str
) -> Path | None:
    """Return the export's file if it is built, building it here when the snapshot
    has at most REQUEST_MAX_PAIRS pairs; None when the worker must build it
    (`queue_export`). Raise ValidationError for options that do not go together."""
    options = {"fmt": fmt, "style": style, "prompt": prompt, "file_format": file_format}
    check_options(**options)
    target = export_path(snapshot, **options)
    if target.exists():
        return target
    if snapshot.row_count <= settings.REQUEST_MAX_PAIRS:
        return cached_export(snapshot, **options)
    return None


def queue_export(
    snapshot: Snapshot,
    *,
    fmt: str,
    style: str,
    prompt: str,
    file_format: str,
    user: AbstractBaseUser | None = None,
) -> SnapshotExport:
    """Return the build job of the snapshot's export in these options, queuing it for
    the worker (`run_export`) unless it is queued or running already. A build that
    failed, or whose file has gone from EXPORT_DIR since, is queued anew."""
    from annotation.tasks import export_task

    options = {"fmt": fmt, "style": style, "prompt": prompt, "file_format": file_format}
    check_options(**options)

    def again(job: SnapshotExport) -> bool:
        return job.status == SnapshotExport.Status.FAILED or (
            job.status == SnapshotExport.Status.DONE
            and not export_path(snapshot, **options).exists()
        )

    return queue_job(
        SnapshotExport,
        {"snapshot": snapshot, **options},
        export_task.enqueue,
        again,
        created_by=user,
    )


def run_export(export_id: int) -> SnapshotExport:
    """Build a queued export (the worker's job) and return its row.

    Only a queued build runs (a job delivered twice does nothing the second time).
    While it writes, `progress` is saved at most twice a second and a thread writes
    `heartbeat_at`; the file appears under its final name by rename, then the row is
    done with its `rows` and `size`. An error fails it with the reason in `error`.
    """
    jobs = SnapshotExport.objects.select_related("snapshot")
    job = jobs.get(pk=export_id)

    def build(running) -> dict:
        fail_lost_exports()
        expected = (
            job.snapshot.rankings.count()
            if job.fmt in ("ranking", "sft")
            else job.snapshot.row_count
        )
        written = [0]
        saved_at = [0.0]

        def progress(rows: int) -> None:
            written[0] = rows
            now = time.monotonic()
            if now - saved_at[0] >= 0.5:
                saved_at[0] = now
                running.update(progress=round(min(0.99, rows / max(1, expected)), 4))

        path = cached_export(job.snapshot, **job.options(), progress=progress)
        return {"rows": written[0], "size": path.stat().st_size}

    run_job(
        SnapshotExport.objects.all(),
        export_id,
        HEARTBEAT_SECONDS,
        build,
        "the export stopped on an error",
    )
    return jobs.get(pk=export_id)


def fail_lost_exports(*, now: datetime | None = None) -> list[int]:
    """Fail the running export builds whose worker is lost (`config.workers.fail_lost`:
    its process on this host gone, or elsewhere and silent for LOST_AFTER_SECONDS),
    and remove what they were writing; return their ids. Such a build left no file under the
    final name; asking for the download again queues it anew."""
    failed = fail_lost(
        SnapshotExport.objects.all(),
        LOST_AFTER_SECONDS,
        "the worker building this export stopped ({why}); download it again to "
        "build it anew",
        now,
    )
    for job in SnapshotExport.objects.filter(pk__in=failed).select_related("snapshot"):
        target = export_path(job.snapshot, **job.options())
        # export_snapshot's and the hf zip's temporary folders: ".<name>." and the 8
        # characters tempfile adds (not ".<name>.gz.<8>", a jsonl.gz build's).
        for partial in target.parent.glob(f".{target.name}.{'?' * 8}"):
            shutil.rmtree(partial, ignore_errors=True)
    return failed


def download_suffix(file_format: str) -> str:
    """Return the file suffix a download of that file format gets."""
    return "zip" if file_format == "hf" else file_format
