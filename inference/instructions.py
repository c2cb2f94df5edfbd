"""Verifiable instructions: everyday requests whose constraints a program checks (as in IFEval).

A request is a task on an everyday topic ("Give some advice on cooking rice.")
followed by one to three constraints in fixed wording ("Answer in at most 40 words.
Do not use any commas."). Nine kinds of constraint, each with a checker:

    max_words   at most N words            bullets     exactly N bullet points
    lowercase   no capital letters         include     a given word appears
    avoid       a given word never appears end_phrase  ends with a given phrase
    json        a JSON object with keys    no_commas   no comma at all
    paragraphs  exactly N paragraphs (blank-line separated)

The constraints are read back from the request's text (`parse_constraints`), so a
judge needs nothing but the prompt and the response. A response follows a
constraint *strictly* when the checker accepts it as written, *loosely* when it
accepts one of IFEval's relaxations (the first line, the last line or both
removed, markdown asterisks removed); an empty response follows nothing. Prompt
level accuracy counts a response only when it follows all its request's
constraints; instruction level accuracy counts constraints.

Splits are by (constraint combination, topic): every such pair belongs to exactly
one of train, dev and test by a stable hash, so no test pair's combination and
topic occur together in a training or dev request (`split_of`).

The judge `JUDGE` ranks responses by the constraints they follow (strictly, then
loosely); the inference app registers it as "instructions" (`inference.judges`).
Constraint counts do not see helpfulness: "always smiling" follows "at most 60 words,
all lowercase" strictly. So the judge also reads a response as *substantive*
(`substantive`: at least `SUBSTANCE_WORDS` words, or the word limit when it is lower,
and a word of the request's topic), and the loop reports strict accuracy counting
only substantive responses beside the plain one.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

TOPICS = (
    "making a cup of tea",
    "packing for a weekend trip",
    "keeping houseplants alive",
    "starting a morning walk routine",
    "saving money on groceries",
    "cleaning a kitchen",
    "planning a birthday party",
    "learning to ride a bicycle",
    "choosing a good book",
    "cooking pasta",
    "writing a thank-you note",
    "staying focused while studying",
    "caring for a new puppy",
    "getting better sleep",
    "organising a small closet",
    "visiting a farmers market",
    "making friends in a new city",
    "preparing for a job interview",
    "baking bread at home",
    "taking the bus to work",
    "planting tomatoes",
    "spending a rainy weekend indoors",
    "washing a car",
    "hosting a board game night",
    "drinking more water",
    "decorating a small room",
    "walking a dog in winter",
    "reading with children",
    "recycling at home",
    "fixing a flat bicycle tyre",
    "making a simple budget",
    "packing a healthy lunch",
    "watching birds in a park",
    "learning a few words of a new language",
    "keeping a journal",
    "cooking rice",
    "choosing running shoes",
    "planning a picnic",
    "staying cool in summer",
    "calling an old friend",
)
TASKS = (
    "Write a short note about {topic}.",
    "Give some advice on {topic}.",
    "Describe {topic} to someone who has never tried it.",
    "Explain why {topic} is worth the effort.",
    "Write a few lines for a blog about {topic}.",
)
KEYWORDS = (
    "easy",
    "time",
    "friend",
    "simple",
    "morning",
    "happy",
    "plan",
    "important",
    "enjoy",
    "always",
)
END_PHRASES = (
    "Is there anything else I can help with?",
    "Have a wonderful day!",
    "That is all for now.",
    "Thanks for reading.",
)
JSON_KEYS = (
    ("title", "summary"),
    ("topic", "tips"),
    ("answer", "reason"),
    ("name", "steps"),
)
MAX_WORDS = (15, 25, 40, 60)
# The helpfulness floor (`substantive`): words an answer needs at least (fewer when
# the request's word limit is lower), and topic words too common to show the subject.
SUBSTANCE_WORDS = 10
TOPIC_STOPWORDS = frozenset(
    "a an and at for in of on the to with while more new few small good old simple "
    "home work".split()
)
COUNTS = (2, 3, 4)
MAX_CONSTRAINTS = 3
MAX_REQUESTS = 10_000
SPLITS = ("train", "dev", "test")
# Share of (combination, topic) pairs in train and dev; the rest is test.
SPLIT_SHARES = (0.7, 0.15)


@dataclass(frozen=True)
class Constraint:
    """One checkable constraint: its kind and its arguments (a count, a word, keys)."""

    kind: str
    args: tuple = ()

    @property
    def text(self) -> str:
        return KINDS[self.kind].describe(self.args)

    def follows(self, response: str) -> bool:
        """Whether `response` follows this constraint as written (strict)."""
        return bool(response.strip()) and KINDS[self.kind].check(response, self.args)

    def follows_loosely(self, response: str) -> bool:
        """Whether any of IFEval's relaxations of `response` follows this constraint."""
        return any(self.follows(variant) for variant in loose_variants(response))


@dataclass(frozen=True)
class Kind:
    """How a kind of constraint is worded, read back, drawn and checked."""

    describe: Callable[[tuple], str]
    pattern: re.Pattern
    parse: Callable[[re.Match], tuple]
    draw: Callable[[random.Random], tuple]
    check: Callable[[str, tuple], bool]


def _words(text: str) -> int:
    return len(text.split())


def _bullets(text: str) -> int:
    return len(re.findall(r"^\s*[*-]\s+\S", text, flags=re.MULTILINE))


def _paragraphs(text: str) -> int:
    return len([p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()])


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE) is not None


def _json_object(text: str) -> dict | None:
    body = text.strip()
    # As IFEval: a fenced block (```json ... ```) counts as the JSON it holds.
    body = re.sub(r"^```(?:json|JSON)?\s*|\s*```$", "", body)
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


KINDS: dict[str, Kind] = {
    "max_words": Kind(
        describe=lambda a: f"Answer in at most {a[0]} words.",
        pattern=re.compile(r"Answer in at most (\d+) words\."),
        parse=lambda m: (int(m.group(1)),),
        draw=lambda rng: (rng.choice(MAX_WORDS),),
        check=lambda r, a: _words(r) <= a[0],
    ),
    "bullets": Kind(
        describe=lambda a: (
            f"Use exactly {a[0]} bullet points, each on its own line starting with '* '."
        ),
        pattern=re.compile(r"Use exactly (\d+) bullet points, each on its own line"),
        parse=lambda m: (int(m.group(1)),),
        draw=lambda rng: (rng.choice(COUNTS),),
        check=lambda r, a: _bullets(r) == a[0],
    ),
    "lowercase": Kind(
        describe=lambda a: "Write your whole response in lowercase letters.",
        pattern=re.compile(r"Write your whole response in lowercase letters\."),
        parse=lambda m: (),
        draw=lambda rng: (),
        check=lambda r, a: r == r.lower() and any(c.isalpha() for c in r),
    ),
    "include": Kind(
        describe=lambda a: f"Include the word '{a[0]}'.",
        pattern=re.compile(r"Include the word '(\w+)'\."),
        parse=lambda m: (m.group(1),),
        draw=lambda rng: (rng.choice(KEYWORDS),),
        check=lambda r, a: _has_word(r, a[0]),
    ),
    "avoid": Kind(
        describe=lambda a: f"Do not use the word '{a[0]}'.",
        pattern=re.compile(r"Do not use the word '(\w+)'\."),
        parse=lambda m: (m.group(1),),
        draw=lambda rng: (rng.choice(KEYWORDS),),
        check=lambda r, a: not _has_word(r, a[0]),
    ),
    "end_phrase": Kind(
        describe=lambda a: (
            f"End your response with the exact phrase '{a[0]}' and nothing after it."
        ),
        pattern=re.compile(r"End your response with the exact phrase '([^']+)'"),
        parse=lambda m: (m.group(1),),
        draw=lambda rng: (rng.choice(END_PHRASES),),
        check=lambda r, a: r.strip().endswith(a[0]),
    ),
    "json": Kind(
        describe=lambda a: (
            f"Give your whole response as a JSON object with the keys '{a[0]}' and "
            f"'{a[1]}'."
        ),
        pattern=re.compile(r"as a JSON object with the keys '(\w+)' and '(\w+)'\."),
        parse=lambda m: (m.group(1), m.group(2)),
        draw=lambda rng: rng.choice(JSON_KEYS),
        check=lambda r, a: (obj := _json_object(r)) is not None and set(a) <= set(obj),
    ),
    "no_commas": Kind(
        describe=lambda a: "Do not use any commas.",
        pattern=re.compile(r"Do not use any commas\."),
        parse=lambda m: (),
        draw=lambda rng: (),
        check=lambda r, a: "," not in r,
    ),
    "paragraphs": Kind(
        describe=lambda a: (
            f"Write exactly {a[0]} paragraphs, separated by a blank line."
        ),
        pattern=re.compile(
            r"Write exactly (\d+) paragraphs, separated by a blank line\."
        ),
        parse=lambda m: (int(m.group(1)),),
        draw=lambda rng: (rng.choice(COUNTS),),
        check=lambda r, a: _paragraphs(r) == a[0],
    ),
}
# Pairs no response can follow together (a JSON object has one paragraph, no bullets,
# ends with a brace and separates two keys with a comma; the end phrases have capitals;
# a bullet list is one paragraph).
CONFLICTS = frozenset(
    frozenset(pair)
    for pair in (
        ("json", "bullets"),
        ("json", "paragraphs"),
        ("json", "end_phrase"),
        ("json", "no_commas"),
        ("bullets", "paragraphs"),
        ("lowercase", "end_phrase"),
    )
)


def combinations_of_kinds() -> list[tuple[str, ...]]:
    """Return every combination of 1 to MAX_CONSTRAINTS kinds without a conflict, sorted."""
    kinds = sorted(KINDS)
    return [
        combo
        for size in range(1, MAX_CONSTRAINTS + 1)
        for combo in combinations(kinds, size)
        if not any(frozenset(pair) in CONFLICTS for pair in combinations(combo, 2))
    ]


def split_of(combination: Sequence[str], topic: str) -> str:
    """Return the split ("train", "dev" or "test") of a (combination, topic) pair.

    A stable hash of the pair, so the split never changes between runs or machines.
    """
    key = "+".join(sorted(combination)) + "|" + topic
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    share = int.from_bytes(digest[:8], "big") / 2**64
    if share < SPLIT_SHARES[0]:
        return "train"
    return "dev" if share < SPLIT_SHARES[0] + SPLIT_SHARES[1] else "test"


@dataclass(frozen=True)
class Request:
    """One generated request: its task on a topic and its constraints."""

    topic: str
    task: str
    constraints: tuple[Constraint, ...]

    @property
    def combination(self) -> tuple[str, ...]:
        return tuple(sorted(c.kind for c in self.constraints))

    @property
    def split(self) -> str:
        return split_of(self.combination, self.topic)

    @property
    def text(self) -> str:
        return " ".join(
            [self.task.format(topic=self.topic)] + [c.text for c in self.constraints]
        )

    @property
    def messages(self) -> list[dict]:
        return [{"role": "user", "content": self.text}]


def make_requests(n: int, split: str = "train", seed: int = 0) -> list[Request]:
    """Return `n` distinct requests of `split`, drawn by `seed` (the same every time).

    Distinct means no two share topic, combination and task wording, so requests of
    a pool differ by more than a number (the pool's near-duplicate gate would drop
    them). One, two and three constraints take turns, so each is about a third of
    the requests (most combinations have three). Raise ValueError when the split
    has fewer such requests than `n`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= n <= MAX_REQUESTS:
        raise ValueError(f"n must be between 0 and {MAX_REQUESTS}, got {n}")
    pairs = [
        (combo, topic)
        for combo in combinations_of_kinds()
        for topic in TOPICS
        if split_of(combo, topic) == split
    ]
    slots = [(combo, topic, task) for combo, topic in pairs for task in TASKS]
    if n > len(slots):
        raise ValueError(
            f"the {split} split has {len(slots)} distinct requests; ask for at most that"
        )
    rng = random.Random(f"instructions:{split}:{seed}")
    by_size: dict[int, list] = {}
    for slot in slots:
        by_size.setdefault(len(slot[0]), []).append(slot)
    for group in by_size.values():
        rng.shuffle(group)
    chosen: list = []
    while len(chosen) < n:
        for size in sorted(by_size):
            if by_size[size] and len(chosen) < n:
                chosen.append(by_size[size].pop())
    return [_draw(combo, topic, task, rng) for combo, topic, task in chosen]


def _draw(combo: tuple[str, ...], topic: str, task: str, rng: random.Random) -> Request:
    constraints = [Constraint(kind, KINDS[kind].draw(rng)) for kind in combo]
    if "include" in combo and "avoid" in combo:
        include, avoid = rng.sample(KEYWORDS, 2)
        constraints = [
            Constraint(c.kind, (include if c.kind == "include" else avoid,))
            if c.kind in ("include", "avoid")
            else c
            for c in constraints
        ]
    rng.shuffle(constraints)
    return Request(topic=topic, task=task, constraints=tuple(constraints))


def parse_constraints(text: str) -> list[Constraint]:
    """Return the constraints a request's text states, in the order they appear."""
    found = [
        (match.start(), Constraint(kind, spec.parse(match)))
        for kind, spec in KINDS.items()
        for match in spec.pattern.finditer(text)
    ]
    return [c for _, c in sorted(found, key=lambda item: item[0])]


def loose_variants(response: str) -> list[str]:
    """Return IFEval's loose readings of a response: as is, without its first line,
    its last line or both, each also without markdown asterisks; empty ones dropped."""
    lines = response.split("\n")
    bases = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    variants = bases + [b.replace("*", "") for b in bases]
    return [v for v in variants if v.strip()]


def topic_of(text: str) -> str | None:
    """Return the `TOPICS` entry a request's text is about, or None (not generated here)."""
    lowered = text.lower()
    found = [t for t in TOPICS if t in lowered]
    return max(found, key=len) if found else None


def substantive(text: str, response: str) -> bool:
    """Return whether `response` says something on the request's subject: at least
    `SUBSTANCE_WORDS` words (the request's word limit when lower) and, when the
    request's topic is known (`topic_of`), a word of it (its first five letters:
    "tomatoes" is met by "tomato"; a shorter word as written or plural). A floor, not
    a grade: it tells an answer from a form that follows the constraints by saying
    nothing."""
    limits = [c.args[0] for c in parse_constraints(text) if c.kind == "max_words"]
    floor = min([SUBSTANCE_WORDS, *limits])
    if _words(response) < floor:
        return False
    topic = topic_of(text)
    if topic is None:
        return True
    stems = {w[:5] for w in re.findall(r"[a-z]+", topic) if w not in TOPIC_STOPWORDS}
    words = set(re.findall(r"[a-z]+", response.lower()))
    return any(
        {w[:5], w, w.removesuffix("s"), w.removesuffix("es")} & stems for w in words
    )


def _prompt_text(prompt_messages: list[dict]) -> str:
    users = [m["content"] for m in prompt_messages if m.get("role") == "user"]
    return users[-1] if users else ""


@dataclass(frozen=True)
class Followed:
    """Which of a request's constraints one response follows, strictly and loosely."""

    strict: tuple[bool, ...]
    loose: tuple[bool, ...]


def followed(constraints: Sequence[Constraint], response: str) -> Followed:
    """Return which `constraints` the response follows, strictly and loosely."""
    return Followed(
        strict=tuple(c.follows(response) for c in constraints),
        loose=tuple(c.follows_loosely(response) for c in constraints),
    )


def accuracy(items: Sequence[tuple[Sequence[Constraint], str]]) -> dict[str, float]:
    """Return strict and loose accuracy over (constraints, response) items.

    `prompt_strict` / `prompt_loose`: share of responses that follow every one of
    their constraints; `instruction_strict` / `instruction_loose`: share of all
    constraints followed. Items without constraints are left out.
    """
    results = [followed(c, r) for c, r in items if c]
    if not results:
        raise ValueError("no item has a constraint; pass requests' constraints")
    constraints = sum(len(f.strict) for f in results)
    return {
        "prompt_strict": sum(all(f.strict) for f in results) / len(results),
        "prompt_loose": sum(all(f.loose) for f in results) / len(results),
        "instruction_strict": sum(sum(f.strict) for f in results) / constraints,
        "instruction_loose": sum(sum(f.loose) for f in results) / constraints,
    }


# What a rewrite adds when it needs words: a filler sentence (no keyword, no comma,
# no capital after lowercasing) and the sentence that carries an `include` word.
FILLER = "Start small and keep going."


def repair(constraints: Sequence[Constraint], response: str) -> str | None:
    """Return `response` edited to follow every constraint strictly, or None.

    What an annotator does with the ranking page's rewrite field when no candidate
    follows the request: keep the best candidate's words and fix its form. The
    avoided word is cut, commas dropped, the text cut to the word limit (leaving
    room for what is added), laid out as the bullets, paragraphs or JSON object
    asked for, the included word added in a short sentence where it is missing,
    the end phrase appended and the whole lowercased when asked. None when the
    response has no words or the result still misses a constraint (a word limit too
    small for the layout).
    """
    kinds = {c.kind: c.args for c in constraints}
    flat = re.sub(r"^\s*(?:[*#-]+|\d+[.)])\s*", "", response.strip(), flags=re.M)
    flat = " ".join(flat.replace("*", "").split())
    if "avoid" in kinds:
        flat = re.sub(rf"\b{re.escape(kinds['avoid'][0])}\b", "", flat, flags=re.I)
        flat = re.sub(r"\s+([.,!?;:])", r"\1", " ".join(flat.split()))
    if "no_commas" in kinds:
        flat = flat.replace(",", "")
    if not flat:
        return None
    units_wanted = (kinds.get("bullets") or kinds.get("paragraphs") or (1,))[0]
    if "json" in kinds:
        units_wanted = 2
    added = len(kinds["end_phrase"][0].split()) if "end_phrase" in kinds else 0
    added += 2 if "include" in kinds else 0
    added += units_wanted if "bullets" in kinds else 0
    added += 2 if "json" in kinds else 0
    words = flat.split()
    if "max_words" in kinds:
        budget = kinds["max_words"][0] - added
        if budget < units_wanted:
            return None
        if len(words) > budget:
            words = words[:budget]
            words[-1] = words[-1].rstrip(".!?;:") + "."
    while len(words) < units_wanted:
        words += FILLER.split()
        if "max_words" in kinds:
            words = words[: kinds["max_words"][0] - added]
            if len(words) < units_wanted:
                return None
    units = _split_units(" ".join(words), units_wanted)
    if "include" in kinds and not _has_word(" ".join(units), kinds["include"][0]):
        units[-1] += f" Remember: {kinds['include'][0]}."
    if "end_phrase" in kinds:
        units[-1] += " " + kinds["end_phrase"][0]
    if "json" in kinds:
        text = json.dumps(
            dict(zip(kinds["json"], units, strict=True)), ensure_ascii=False
        )
    elif "bullets" in kinds:
        text = "\n".join(f"* {unit}" for unit in units)
    else:
        text = "\n\n".join(units)
    if "lowercase" in kinds:
        text = text.lower()
    return text if all(c.follows(text) for c in constraints) else None


def _split_units(text: str, n: int) -> list[str]:
    """Return `text` in `n` contiguous parts: whole sentences where it has n or more."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
    pieces = sentences if len(sentences) >= n else text.split()
    size, extra = divmod(len(pieces), n)
    units, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        units.append(" ".join(pieces[start:end]))
        start = end
    return units


class InstructionsJudge:
    """A judge (`inference.judges`) that prefers the response following more of the
    request's constraints strictly, then loosely; equal counts tie. A response is
    `correct` when it follows all of them strictly (IFEval's prompt-level strict
    accuracy), which the loop reports as its accuracy, and `correct_loosely` when it
    follows all of them loosely (the loose accuracy beside it)."""

    def followed(self, prompt_messages: list[dict], response: str) -> Followed:
        return followed(parse_constraints(_prompt_text(prompt_messages)), response)

    def score(self, prompt_messages: list[dict], response: str) -> tuple[int, int]:
        result = self.followed(prompt_messages, response)
        return sum(result.strict), sum(result.loose)

    def reward(self, prompt_messages: list[dict], response: str) -> float:
        """Return the share of the request's constraints the response follows
        strictly, with the loose count as a tie-break worth less than one strict
        constraint: in [0, 1], ordering a request's responses as `rank` does (0
        for a request with no constraints). GRPO's verifiable reward
        (`inference.scoring.judge_reward_function`)."""
        result = self.followed(prompt_messages, response)
        n = len(result.strict)
        if not n:
            return 0.0
        # The loose count is at most n, so /(n + 1) keeps it under one strict step.
        return (sum(result.strict) + sum(result.loose) / (n + 1)) / (n + n / (n + 1))

    def compare(self, prompt_messages: list[dict], a: str, b: str) -> float:
        score_a, score_b = (self.score(prompt_messages, r) for r in (a, b))
        return float((score_a > score_b) - (score_a < score_b))

    def correct(self, prompt_messages: list[dict], response: str) -> bool:
        strict = self.followed(prompt_messages, response).strict
        return bool(strict) and all(strict)

    def correct_loosely(self, prompt_messages: list[dict], response: str) -> bool:
        loose = self.followed(prompt_messages, response).loose
        return bool(loose) and all(loose)

    def correct_substantively(self, prompt_messages: list[dict], response: str) -> bool:
        """Return whether the response is `correct` and `substantive` (the floor of
        helpfulness the constraint count does not see)."""
        return self.correct(prompt_messages, response) and substantive(
            _prompt_text(prompt_messages), response
        )

    def repair(self, prompt_messages: list[dict], response: str) -> str | None:
        """Return the response edited to follow all the request's constraints, or
        None (see `repair`): a simulated annotator's rewrite."""
        constraints = parse_constraints(_prompt_text(prompt_messages))
        return repair(constraints, response) if constraints else None

    def rank(
        self, prompt_messages: list[dict], responses: list[str]
    ) -> list[list[int]]:
        scores = [self.score(prompt_messages, r) for r in responses]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, score in enumerate(scores):
            groups.setdefault(score, []).append(i)
        return [groups[score] for score in sorted(groups, reverse=True)]


JUDGE = InstructionsJudge()
