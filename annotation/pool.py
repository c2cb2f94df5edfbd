"""The prompt pool's gate: what enters a project, and why the rest did not.

Every prompt that arrives (by import, by the API, from a prompt file) passes, in
order: shape (a string or a list of role/content messages), length, repetition and
character mix, exact duplicates (content hash) and near duplicates (MinHash over word
3-gram shingles, Jaccard estimate at or above `NEAR_DUPLICATE_JACCARD`) against the
project's pool and the rest of the batch. Prompts that pass may still carry a
harmful-content flag, with the matching term as its reason; a flagged prompt is held
for an admin's review (`held_for_review`) and no round publishes it until released.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.audit import record
from annotation.models import Project, Prompt, messages_hash, normalise_messages

MIN_CHARS = 8
MAX_CHARS = 8000
MAX_REPEATED_SHINGLES = 0.5
MAX_CHAR_RUN = 20
MIN_LETTER_SHARE = 0.5
NEAR_DUPLICATE_JACCARD = 0.8
NUM_PERM = 128
# A deliberately small, conservative lexicon: it flags for review, it never rejects.
HARM_TERMS = {
    "weapons": (
        "make a bomb",
        "build a bomb",
        "pipe bomb",
        "nerve agent",
        "bioweapon",
        "untraceable gun",
        "ghost gun",
    ),
    "self-harm": ("kill myself", "suicide method", "end my life", "hurt myself"),
    "violence": ("kill someone", "murder someone", "poison someone", "hurt someone"),
    "crime": ("launder money", "steal a car", "credit card numbers", "hack into"),
    "sexual content involving minors": ("child porn", "sexualize a minor"),
    "hate": ("racial slur", "ethnic cleansing"),
}
_WORD = re.compile(r"\w+", re.UNICODE)


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


def quality_problem(text: str) -> str | None:
    """Return why a prompt's text fails the quality filters, or None if it passes."""
    stripped = text.strip()
    if len(stripped) < MIN_CHARS:
        return f"too short: {len(stripped)} characters; the minimum is {MIN_CHARS}"
    if len(stripped) > MAX_CHARS:
        return f"too long: {len(stripped):,} characters; the maximum is {MAX_CHARS:,}"
    run = re.search(rf"(.)\1{{{MAX_CHAR_RUN - 1},}}", stripped)
    if run:
        return f"repetitive: the character {run.group(1)!r} repeats {len(run.group(0))} times"
    words = [w.lower() for w in _WORD.findall(stripped)]
    shingles = list(zip(words, words[1:], words[2:], strict=False))
    if len(shingles) >= 6:
        repeated = 1 - len(set(shingles)) / len(shingles)
        if repeated > MAX_REPEATED_SHINGLES:
            return (
                f"repetitive: {repeated:.0%} of its word 3-grams repeat; "
                f"the maximum is {MAX_REPEATED_SHINGLES:.0%}"
            )
    visible = [c for c in stripped if not c.isspace()]
    controls = [
        c for c in visible if unicodedata.category(c) in ("Cc", "Cf", "Co", "Cn")
    ]
    if controls:
        return f"bad characters: {len(controls)} control or unassigned characters"
    letters = sum(c.isalpha() for c in visible)
    if visible and letters / len(visible) < MIN_LETTER_SHARE:
        return (
            f"character mix: {letters / len(visible):.0%} letters; "
            f"at least {MIN_LETTER_SHARE:.0%} expected"
        )
    return None


def harm_flag(text: str) -> str | None:
    """Return the harmful-content reason for a text, or None."""
    lowered = " ".join(text.lower().split())
    for category, terms in HARM_TERMS.items():
        for term in terms:
            if term in lowered:
                return f"{category}: mentions {term!r}"
    return None


def minhash(text: str):
    """Return the MinHash of a text's word 3-gram shingles (words for short texts)."""
    from datasketch import MinHash

    words = [w.lower() for w in _WORD.findall(text)]
    shingles = {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}
    signature = MinHash(num_perm=NUM_PERM, seed=1)
    for shingle in shingles:
        signature.update(shingle.encode("utf-8"))
    return signature


def _full_text(messages: list[dict]) -> str:
    return "\n".join(m["content"] for m in messages)


def add_prompts(
    project: Project,
    prompts: list,
    *,
    source: str,
    is_held_out: bool = False,
    actor: AbstractBaseUser | None = None,
) -> PoolReport:
    """Curate `prompts` (strings or message lists) and add the ones that pass.

    Writes all accepted prompts in one transaction; rejected ones are reported with
    their index and reason, flagged ones are stored with the flag in `Prompt.flags`
    and held for review.
    """
    report = PoolReport()
    existing_hashes = dict(
        Prompt.objects.filter(project=project).values_list("content_hash", "id")
    )
    lsh = _project_lsh(project)
    batch_hashes: dict[str, int] = {}
    accepted: list[tuple[int, Prompt, str | None]] = []
    for index, raw in enumerate(prompts):
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
        problem, signature = _curation_problem(
            text, content_hash, existing_hashes, batch_hashes, lsh
        )
        if problem is not None:
            report.rejected.append(
                {"index": index, "reason": problem, "text": text[:200]}
            )
            continue
        batch_hashes[content_hash] = index
        lsh.insert(f"input {index}", signature)
        flag = harm_flag(text)
        prompt = Prompt(
            project=project,
            messages=messages,
            content_hash=content_hash,
            source=source,
            is_held_out=is_held_out,
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
            after={"source": source, "added": len(created), "held_out": is_held_out},
        )
    report.added = created
    report.flagged = [
        {"index": index, "prompt_id": prompt.id, "reason": flag}
        for (index, _, flag), prompt in zip(accepted, created, strict=False)
        if flag
    ]
    return report


def _project_lsh(project: Project):
    """Return a MinHash LSH index of the project's prompts, for near-duplicate checks."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=NEAR_DUPLICATE_JACCARD, num_perm=NUM_PERM)
    for prompt_id, messages in Prompt.objects.filter(project=project).values_list(
        "id", "messages"
    ):
        lsh.insert(f"prompt {prompt_id}", minhash(_full_text(messages)))
    return lsh


def _curation_problem(
    text: str,
    content_hash: str,
    existing_hashes: dict[str, int],
    batch_hashes: dict[str, int],
    lsh,
) -> tuple[str | None, object]:
    """Return (why the prompt is dropped or None, its MinHash signature or None).

    Checked in order: quality, exact duplicate of a stored prompt, exact duplicate
    of an earlier input, near duplicate of either.
    """
    problem = quality_problem(text)
    if problem is None and content_hash in existing_hashes:
        problem = f"exact duplicate of prompt {existing_hashes[content_hash]}"
    if problem is None and content_hash in batch_hashes:
        problem = f"exact duplicate of input {batch_hashes[content_hash]}"
    signature = None
    if problem is None:
        signature = minhash(text)
        near = sorted(lsh.query(signature))
        if near:
            problem = f"near duplicate (MinHash Jaccard ≥ {NEAR_DUPLICATE_JACCARD}) of {near[0]}"
    return problem, signature


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
