"""Text curation: the quality filters, exact and near duplicates, and the harm flag.

One pipeline for every text the platform takes in: prompts entering a project's
pool (`annotation.pool`), a pre-training corpus or uploaded demonstrations
(`annotation.corpora`), and the demo's generated corpus. A text passes, in order:
length, repetition (a run of one character, repeated word 3-grams), bad characters
and character mix (`quality_problem`); then it must be neither an exact duplicate
(content hash) nor a near duplicate (MinHash over word 3-gram shingles, Jaccard
estimate at or above the threshold) of a text seen before (`Seen`). The harm flag
(`harm_flag`) names the matching term of a small lexicon: the pool holds a flagged
prompt for review; a corpus drops the text when its filters say so. Thresholds are
a `Filters`, recorded with what they curated. Plain Python, no Django.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

NUM_PERM = 128
SAMPLES_PER_REASON = 5
SAMPLE_CHARS = 300
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
# Why a text was dropped: the report's keys, in the order the checks run.
REASONS = {
    "too_short": "fewer characters than min_chars",
    "too_long": "more characters than max_chars",
    "repeated_character": "one character repeated max_char_run times or more",
    "repeated_ngrams": "too many of its word 3-grams repeat",
    "bad_characters": "control or unassigned characters",
    "character_mix": "too few letters among its visible characters",
    "exact_duplicate": "the same text as one seen before",
    "near_duplicate": "a MinHash near duplicate of one seen before",
    "harmful": "matches the harm lexicon",
}
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Filters:
    """The thresholds of one curation; recorded with the data they curated."""

    min_chars: int = field(default=8, metadata={"help": "Shortest text kept."})
    max_chars: int = field(default=8000, metadata={"help": "Longest text kept."})
    max_char_run: int = field(
        default=20,
        metadata={"help": "Drop a text where one character repeats this often."},
    )
    max_repeated_ngrams: float = field(
        default=0.5,
        metadata={"help": "Largest share of word 3-grams that may repeat (0 to 1)."},
    )
    min_letter_share: float = field(
        default=0.5,
        metadata={
            "help": "Smallest share of letters among visible characters (0 to 1)."
        },
    )
    near_duplicate_jaccard: float = field(
        default=0.8,
        metadata={
            "help": "MinHash Jaccard at or above which a text is a near duplicate."
        },
    )
    drop_harmful: bool = field(
        default=False,
        metadata={
            "help": "Drop texts the harm lexicon matches (else keep them flagged)."
        },
    )

    def __post_init__(self) -> None:
        if self.min_chars < 1:
            raise ValueError(f"min_chars must be >= 1, got {self.min_chars}")
        if self.max_chars < self.min_chars:
            raise ValueError(
                f"max_chars must be >= min_chars ({self.min_chars}), got {self.max_chars}"
            )
        if self.max_char_run < 2:
            raise ValueError(f"max_char_run must be >= 2, got {self.max_char_run}")
        for name in ("max_repeated_ngrams", "min_letter_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.near_duplicate_jaccard <= 1:
            raise ValueError(
                "near_duplicate_jaccard must be in (0, 1], got "
                f"{self.near_duplicate_jaccard}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Filters:
        """Build filters from a dict; raise ValueError naming an unknown key."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown filter(s) {unknown}; expected some of {sorted(known)}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Return the thresholds as plain values."""
        return dataclasses.asdict(self)


# Prompts: a question or instruction, flagged ones held for review.
PROMPT_FILTERS = Filters()
# Pre-training documents and demonstrations: longer texts; flagged ones dropped.
CORPUS_FILTERS = Filters(min_chars=16, max_chars=100_000, drop_harmful=True)


class Problem(NamedTuple):
    """Why a text is dropped: a key of REASONS and the message for people."""

    reason: str
    message: str


def quality_check(text: str, filters: Filters = PROMPT_FILTERS) -> Problem | None:
    """Return why a text fails the quality filters, or None if it passes."""
    stripped = text.strip()
    if len(stripped) < filters.min_chars:
        return Problem(
            "too_short",
            f"too short: {len(stripped)} characters; the minimum is {filters.min_chars}",
        )
    if len(stripped) > filters.max_chars:
        return Problem(
            "too_long",
            f"too long: {len(stripped):,} characters; the maximum is {filters.max_chars:,}",
        )
    run = re.search(rf"(.)\1{{{filters.max_char_run - 1},}}", stripped)
    if run:
        return Problem(
            "repeated_character",
            f"repetitive: the character {run.group(1)!r} repeats {len(run.group(0))} times",
        )
    words = [w.lower() for w in _WORD.findall(stripped)]
    shingles = list(zip(words, words[1:], words[2:], strict=False))
    if len(shingles) >= 6:
        repeated = 1 - len(set(shingles)) / len(shingles)
        if repeated > filters.max_repeated_ngrams:
            return Problem(
                "repeated_ngrams",
                f"repetitive: {repeated:.0%} of its word 3-grams repeat; "
                f"the maximum is {filters.max_repeated_ngrams:.0%}",
            )
    visible = [c for c in stripped if not c.isspace()]
    controls = [
        c for c in visible if unicodedata.category(c) in ("Cc", "Cf", "Co", "Cn")
    ]
    if controls:
        return Problem(
            "bad_characters",
            f"bad characters: {len(controls)} control or unassigned characters",
        )
    letters = sum(c.isalpha() for c in visible)
    if visible and letters / len(visible) < filters.min_letter_share:
        return Problem(
            "character_mix",
            f"character mix: {letters / len(visible):.0%} letters; "
            f"at least {filters.min_letter_share:.0%} expected",
        )
    return None


def quality_problem(text: str, filters: Filters = PROMPT_FILTERS) -> str | None:
    """Return the message of why a text fails the quality filters, or None."""
    problem = quality_check(text, filters)
    return problem.message if problem else None


def harm_flag(text: str) -> str | None:
    """Return the harmful-content reason for a text, or None."""
    lowered = " ".join(text.lower().split())
    for category, terms in HARM_TERMS.items():
        for term in terms:
            if term in lowered:
                return f"{category}: mentions {term!r}"
    return None


def text_hash(text: str) -> str:
    """Return the SHA-256 of a text with its whitespace runs made single spaces."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def minhash(text: str):
    """Return the MinHash of a text's word 3-gram shingles (words for short texts)."""
    from datasketch import MinHash

    words = [w.lower() for w in _WORD.findall(text)]
    shingles = {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}
    signature = MinHash(num_perm=NUM_PERM, seed=1)
    signature.update_batch([s.encode("utf-8") for s in shingles])
    return signature


class Seen:
    """The texts seen so far, by content hash and in a MinHash LSH index.

    Each carries a label ("prompt 12", "input 3", "line 40") that the duplicate
    messages name.
    """

    def __init__(self, jaccard: float) -> None:
        from datasketch import MinHashLSH

        self.jaccard = jaccard
        self.hashes: dict[str, str] = {}
        self.lsh = MinHashLSH(threshold=jaccard, num_perm=NUM_PERM)

    def add(
        self, label: str, content_hash: str, signature=None, text: str = ""
    ) -> None:
        """Remember a text under `label` (its signature is computed when not given)."""
        self.hashes.setdefault(content_hash, label)
        if label not in self.lsh:
            self.lsh.insert(
                label, signature if signature is not None else minhash(text)
            )

    def duplicate(self, text: str, content_hash: str) -> tuple[Problem | None, Any]:
        """Return (why it duplicates a seen text or None, its MinHash or None)."""
        if content_hash in self.hashes:
            return Problem(
                "exact_duplicate", f"exact duplicate of {self.hashes[content_hash]}"
            ), None
        signature = minhash(text)
        near = sorted(self.lsh.query(signature))
        if near:
            return Problem(
                "near_duplicate",
                f"near duplicate (MinHash Jaccard ≥ {self.jaccard}) of {near[0]}",
            ), signature
        return None, signature


def check(
    text: str, content_hash: str, filters: Filters, seen: Seen
) -> tuple[Problem | None, Any]:
    """Return (why the text is dropped or None, its MinHash or None).

    Checked in order: quality, exact duplicate, near duplicate, then the harm flag
    when the filters drop harmful texts. A kept text is not added to `seen`: the
    caller adds it (`seen.add`) once it takes it.
    """
    problem = quality_check(text, filters)
    if problem is not None:
        return problem, None
    problem, signature = seen.duplicate(text, content_hash)
    if problem is None and filters.drop_harmful and (flag := harm_flag(text)):
        problem = Problem("harmful", f"harmful: {flag}")
    return problem, signature


@dataclass
class Curated:
    """What a curation kept and why it dropped the rest, by the texts' labels."""

    kept: list[int] = field(default_factory=list)  # indices into the input
    counts: dict[str, int] = field(default_factory=dict)  # reason -> dropped
    samples: dict[str, list[dict]] = field(default_factory=dict)  # reason -> few
    flagged: int = 0  # kept texts the harm lexicon matches

    def drop(self, label: str, text: str, problem: Problem) -> None:
        """Count a dropped text under its reason; keep the first few as samples."""
        self.counts[problem.reason] = self.counts.get(problem.reason, 0) + 1
        samples = self.samples.setdefault(problem.reason, [])
        if len(samples) < SAMPLES_PER_REASON:
            samples.append(
                {
                    "where": label,
                    "message": problem.message,
                    "text": text[:SAMPLE_CHARS],
                }
            )

    def report(self, total: int) -> dict[str, Any]:
        """Return the report: counts and samples per reason, in REASONS order."""
        return {
            "total": total,
            "kept": len(self.kept),
            "dropped": sum(self.counts.values()),
            "flagged": self.flagged,
            "reasons": [
                {
                    "reason": reason,
                    "description": REASONS[reason],
                    "count": self.counts[reason],
                    "samples": self.samples[reason],
                }
                for reason in REASONS
                if reason in self.counts
            ],
        }


def curate(
    texts: list[str],
    filters: Filters,
    labels: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Curated:
    """Run the curation on `texts` (each against the ones kept before it).

    `labels` name the texts in the report ("line 7"); by default "text N".
    `progress`, when given, is told every 500 texts how many were curated.
    """
    labels = labels or [f"text {i + 1}" for i in range(len(texts))]
    seen = Seen(filters.near_duplicate_jaccard)
    curated = Curated()
    for index, (text, label) in enumerate(zip(texts, labels, strict=True)):
        if progress is not None and index % 500 == 0 and index:
            progress(index)
        content_hash = text_hash(text)
        problem, signature = check(text, content_hash, filters, seen)
        if problem is not None:
            curated.drop(label, text, problem)
            continue
        seen.add(label, content_hash, signature)
        curated.kept.append(index)
        if harm_flag(text):
            curated.flagged += 1
    return curated
