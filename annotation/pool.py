"""The prompt pool's gate: what enters a project, and why the rest did not.

Every prompt that arrives (by import, by the API, from a prompt file) must be a
string or a list of role/content messages, then passes the curation of
`annotation.curation` with `PROMPT_FILTERS`: length, repetition and character mix,
exact and MinHash near duplicates against the project's pool and the rest of the
batch. Prompts that pass may still carry a
harmful-content flag, with the matching term as its reason; a flagged prompt is held
for an admin's review (`held_for_review`) and no round publishes it until released.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from annotation.audit import record
from annotation.curation import PROMPT_FILTERS, Seen, check, harm_flag
from annotation.importing import queue_upload
from annotation.models import (
    ImportReport,
    Project,
    Prompt,
    messages_hash,
    normalise_messages,
)
from annotation.prompt_files import Progress, check_suffix, read_prompt_file

# How often curation reports progress, in prompts.
PROGRESS_EVERY = 500
# A prompt file's report lists at most this many dropped (and held) lines.
REPORT_LINES = 1000


@dataclass
class PoolReport:
    """What happened to each offered prompt, by its index in the input."""

    added: list[Prompt] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # {index, reason, text}
    flagged: list[dict] = field(default_factory=list)  # {index, prompt_id, reason}

    def as_dict(self) -> dict:
        return {
            "added": [p.id for p in self.added],
            "rejected": self.rejected,
            "flagged": self.flagged,
        }


def _full_text(messages: list[dict]) -> str:
    return "\n".join(m["content"] for m in messages)


# The held-out splits: "dev" for choosing settings, "test" for the figures reported.
EVAL_SPLITS = ("dev", "test")


def add_prompts(
    project: Project,
    prompts: list,
    *,
    source: str,
    is_held_out: bool = False,
    eval_split: str = "test",
    actor: AbstractBaseUser | None = None,
    progress: Callable[[int], None] | None = None,
) -> PoolReport:
    """Curate `prompts` (strings or message lists) and add the ones that pass.

    Held-out prompts go to `eval_split` ("dev" for choosing settings, "test" for
    the figures reported; see `held_out_prompts`).

    Writes all accepted prompts in one transaction; rejected ones are reported with
    their index and reason, flagged ones are stored with the flag in `Prompt.flags`
    and held for review. `progress`, when given, is told every PROGRESS_EVERY
    prompts how many were curated.
    """
    if eval_split not in EVAL_SPLITS:
        raise ValueError(f"eval_split must be one of {EVAL_SPLITS}, got {eval_split!r}")
    report = PoolReport()
    seen = _project_prompts(project)
    accepted: list[tuple[int, Prompt, str | None]] = []
    for index, raw in enumerate(prompts):
        if progress is not None and index % PROGRESS_EVERY == 0 and index:
            progress(index)
        preview = raw if isinstance(raw, str) else str(raw)
        try:
            messages = normalise_messages(raw)
        except ValidationError as exc:
            report.rejected.append(
                {"index": index, "reason": exc.messages[0], "text": preview[:200]}
            )
            continue
        text = _full_text(messages)
        content_hash = messages_hash(messages)
        problem, signature = check(text, content_hash, PROMPT_FILTERS, seen)
        if problem is not None:
            report.rejected.append(
                {"index": index, "reason": problem.message, "text": text[:200]}
            )
            continue
        seen.add(f"input {index}", content_hash, signature)
        flag = harm_flag(text)
        prompt = Prompt(
            project=project,
            messages=messages,
            content_hash=content_hash,
            source=source,
            is_held_out=is_held_out,
            eval_split=eval_split,
            flags=[{"flag": "harmful", "reason": flag}] if flag else [],
            held_for_review=bool(flag),
        )
        accepted.append((index, prompt, flag))
    with transaction.atomic():
        created = Prompt.objects.bulk_create(
            [p for _, p, _ in accepted], batch_size=1000
        )
        record(
            actor,
            "prompts.add",
            project=project,
            after={
                "source": source,
                "added": len(created),
                "held_out": is_held_out,
                **({"eval_split": eval_split} if is_held_out else {}),
            },
        )
    report.added = created
    report.flagged = [
        {"index": index, "prompt_id": prompt.id, "reason": flag}
        for (index, _, flag), prompt in zip(accepted, created, strict=False)
        if flag
    ]
    return report


def queue_prompt_file(
    project: Project,
    upload: UploadedFile,
    *,
    is_held_out: bool = False,
    actor: AbstractBaseUser | None = None,
) -> ImportReport:
    """Stage a prompt file and queue it for the worker (`importing.queue_upload`),
    which adds its prompts with `add_prompt_file`; return the queued job.

    Raise ValidationError for a kind of file that cannot be read (`check_suffix`)."""
    check_suffix(upload.name or "")
    return queue_upload(
        project,
        upload,
        kind=ImportReport.Kind.PROMPTS,
        options={"is_held_out": is_held_out},
        user=actor,
    )


def add_prompt_file(
    project: Project,
    path: Path,
    file_name: str,
    *,
    is_held_out: bool = False,
    actor: AbstractBaseUser | None = None,
    progress: Progress | None = None,
) -> dict:
    """Read a prompt file (`read_prompt_file`), add its prompts through the curation
    (`add_prompts`) and return the report by file line: {file, records, added,
    dropped: [{line, reason, text}], held: [{line, reason}]}.

    `progress` is told the share done, reading being the first half and curating
    the second, and the records read.
    """
    reading = None if progress is None else (lambda s, n: progress(s / 2, n))
    read = read_prompt_file(file_name, path, progress=reading)
    total = len(read.prompts) + len(read.unreadable)
    curating = (
        None
        if progress is None
        else (lambda done: progress(0.5 + done / max(1, len(read.prompts)) / 2, total))
    )
    pool = add_prompts(
        project,
        read.prompts,
        source=f"upload:{file_name}",
        is_held_out=is_held_out,
        actor=actor,
        progress=curating,
    )
    dropped = [
        {"line": read.lines[r["index"]], "reason": r["reason"], "text": r["text"]}
        for r in pool.rejected
    ]
    dropped += [{**u, "text": ""} for u in read.unreadable]
    held = [
        {"line": read.lines[f["index"]], "reason": f["reason"]} for f in pool.flagged
    ]
    return {
        "file": file_name,
        "records": total,
        "added": len(pool.added),
        "dropped_count": len(dropped),
        "dropped": sorted(dropped, key=lambda d: d["line"])[:REPORT_LINES],
        "held_count": len(held),
        "held": held[:REPORT_LINES],
    }


def _project_prompts(project: Project) -> Seen:
    """Return the project's prompts as seen texts, for duplicate checks."""
    seen = Seen(PROMPT_FILTERS.near_duplicate_jaccard)
    for prompt_id, content_hash, messages in Prompt.objects.filter(
        project=project
    ).values_list("id", "content_hash", "messages"):
        seen.add(f"prompt {prompt_id}", content_hash, text=_full_text(messages))
    return seen


def held_prompts(project: Project):
    """Return the project's prompts held for review, oldest first."""
    return project.prompts.filter(held_for_review=True).order_by("id")


@transaction.atomic
def release_prompts(
    project: Project, prompt_ids: list[int], *, actor: AbstractBaseUser | None = None
) -> int:
    """Release held prompts for publishing (their flags stay); return how many."""
    ids = sorted(
        held_prompts(project).filter(pk__in=prompt_ids).values_list("pk", flat=True)
    )
    record(
        actor,
        "prompts.release",
        project=project,
        before={"held": ids},
        after={"released": ids},
    )
    return held_prompts(project).filter(pk__in=ids).update(held_for_review=False)


@transaction.atomic
def remove_prompts(
    project: Project, prompt_ids: list[int], *, actor: AbstractBaseUser | None = None
) -> int:
    """Delete held prompts from the pool; return how many."""
    ids = sorted(
        held_prompts(project).filter(pk__in=prompt_ids).values_list("pk", flat=True)
    )
    record(actor, "prompts.remove", project=project, before={"held": ids}, after=None)
    removed, _ = held_prompts(project).filter(pk__in=ids).delete()
    return removed


def held_out_prompts(project: Project, n: int, split: str = "test") -> list[list[dict]]:
    """Return the messages of the first n held-out prompts of `split`, by id.

    The one home of "which prompts is a policy evaluated on": the loop, a training
    round's evaluation stage and the benches all ask here. "test" prompts give the
    figures reported; "dev" prompts are for choosing settings. Raise ValueError when
    the project has none of that split.
    """
    if split not in EVAL_SPLITS:
        raise ValueError(f"split must be one of {EVAL_SPLITS}, got {split!r}")
    prompts = list(
        project.prompts.filter(is_held_out=True, eval_split=split)
        .order_by("id")
        .values_list("messages", flat=True)[: max(0, n)]
    )
    if not prompts:
        raise ValueError(
            f"project {project.name} has no held-out {split} prompts; mark some prompts "
            f"is_held_out=True with eval_split={split!r} (the demo keeps one per dev "
            "and test question) so policies are evaluated on unseen questions"
        )
    return prompts
