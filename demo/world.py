"""The demo world: an invented zoo, questions about it, graded responses and a judge.

The world is a fixed table of 96 invented creatures (a *glimmet* is blue, has 6 legs,
eats moss and costs 3 coins) and 24 people's names. With 24 creatures the tiny SFT
policy learnt each trained creature's answers by heart and could not say the facts of
a creature it was never asked about, though its base model knew them; with 96, and the
corpus stating every fact in each phrasing an answer uses, it can (docs/loop.md, "A
larger zoo"). A user asks one of seven kinds of question, each in a few phrasings and
with an optional opener ("Quick question: "):

- a fact look-up: the colour, the number of legs, the food or the price of a creature;
- a little arithmetic: what N creatures cost, or how many legs N creatures have;
- a polite request: say hello to Ana, wish Ben a good day, thank Chloe for the gift.

A response is built from parts, each sampled at a fixed rate in the SFT data, so the
SFT policy's samples vary along the axes a person judges:

- an opener: polite ("Sure!", "Happy to help.") 50%, curt ("Ugh.", "Fine.") 20%, none;
- the answer: correct 70%, wrong 15% (another creature's colour, a miscount, the
  wrong name), evasive 15% ("I don't know, ask someone else.");
- rambling filler ("Creatures are fascinating.") 35%, one to three sentences;
- a closing: polite ("Hope that helps!") 40%, curt ("Don't ask again.") 10%, none.

The judge (`judge_score`) parses a response sentence by sentence and scores four axes
against the world table: correctness (+1 right, -1 wrong, 0 no answer), helpfulness
(+1 a right answer, 0 a wrong one, -1 evasive or nothing: "I am not sure" beats a
guess; a greeting counts only as the greeting asked for), politeness (+0.5 per polite sentence up to +1,
-1 per curt one) and concision (-0.5 per filler, unrecognised or repeated sentence, down
to -2). The total weighs them 2 : 1.5 : 1 : 1. Several answers are right or polite
(five openers, three closings, two phrasings of most answers), so a policy that learns
the judge's preferences still varies; and a tiny model learns style (always polite,
never evasive, no filler) far more reliably than facts and sums, which is where
preference learning beats plain SFT.

`repair` is what a person writes in the ranking page's rewrite field: the response with
its answer made right (the world table's value, the response's own phrasing and
style), so a simulated annotator can write rewrites (`run_loop --rewrites`).

Plain Python: no Django, no ML libraries. Everything is deterministic given a seed.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

# name: (colour, legs, food, price in coins)
CREATURES: dict[str, tuple[str, int, str, int]] = {
    "glimmet": ("blue", 6, "moss", 3),
    "borkle": ("red", 4, "berries", 5),
    "zindle": ("green", 8, "fish", 7),
    "quorp": ("yellow", 2, "seeds", 2),
    "mabbit": ("purple", 4, "leaves", 4),
    "fennix": ("orange", 6, "bugs", 6),
    "tolloop": ("grey", 2, "honey", 9),
    "snazzle": ("pink", 8, "mushrooms", 8),
    "wumple": ("blue", 4, "fish", 2),
    "krindle": ("green", 2, "honey", 5),
    "plooka": ("red", 6, "leaves", 3),
    "drazzle": ("yellow", 8, "moss", 6),
    "yimmle": ("purple", 2, "berries", 7),
    "gorbit": ("orange", 4, "mushrooms", 4),
    "nuffin": ("grey", 6, "seeds", 8),
    "vorpel": ("pink", 4, "bugs", 9),
    "hoddle": ("green", 6, "berries", 2),
    "sprock": ("blue", 8, "leaves", 5),
    "twindle": ("red", 2, "mushrooms", 6),
    "blorbin": ("yellow", 6, "honey", 4),
    "crumpet": ("purple", 8, "fish", 3),
    "jibbet": ("orange", 2, "moss", 7),
    "lumox": ("grey", 4, "bugs", 8),
    "pindle": ("pink", 6, "seeds", 9),
    # 72 more, generated once from syllables (none a part of another's name) and
    # frozen here: enough creatures that SFT learns to look a fact up, not recite it.
    "thesket": ("blue", 8, "seeds", 6),
    "creeggle": ("orange", 4, "berries", 4),
    "mosket": ("green", 8, "honey", 2),
    "florkin": ("pink", 4, "honey", 6),
    "frainch": ("grey", 2, "honey", 5),
    "spezz": ("orange", 8, "moss", 7),
    "snelly": ("grey", 4, "honey", 7),
    "nezzle": ("green", 6, "berries", 2),
    "neench": ("green", 2, "fish", 8),
    "kuggle": ("purple", 2, "mushrooms", 5),
    "jailly": ("grey", 6, "leaves", 2),
    "thoonk": ("yellow", 4, "leaves", 7),
    "fleerkin": ("yellow", 4, "berries", 8),
    "stomper": ("grey", 6, "berries", 7),
    "plaippet": ("pink", 4, "fish", 9),
    "pleeffle": ("blue", 6, "seeds", 5),
    "gleesket": ("blue", 4, "mushrooms", 2),
    "jozzle": ("pink", 8, "seeds", 8),
    "grorbo": ("red", 2, "leaves", 2),
    "snuggle": ("pink", 2, "berries", 4),
    "cramox": ("purple", 2, "bugs", 2),
    "snandle": ("purple", 8, "fish", 3),
    "thubbit": ("orange", 6, "seeds", 7),
    "flunk": ("green", 8, "seeds", 2),
    "yoomper": ("blue", 6, "fish", 9),
    "jeerbo": ("blue", 4, "moss", 8),
    "flonch": ("orange", 2, "bugs", 4),
    "glimper": ("grey", 2, "fish", 5),
    "homper": ("pink", 4, "fish", 3),
    "goolly": ("pink", 6, "berries", 3),
    "prendle": ("purple", 4, "honey", 4),
    "croomox": ("grey", 8, "fish", 4),
    "twooppet": ("pink", 8, "fish", 2),
    "cronk": ("yellow", 8, "honey", 8),
    "frimox": ("blue", 8, "honey", 9),
    "therkin": ("orange", 2, "seeds", 7),
    "jomox": ("red", 6, "seeds", 6),
    "creezzle": ("grey", 2, "berries", 3),
    "heemper": ("yellow", 2, "seeds", 2),
    "blippet": ("grey", 6, "leaves", 9),
    "traimox": ("green", 2, "mushrooms", 6),
    "nemper": ("yellow", 6, "mushrooms", 3),
    "thelly": ("purple", 4, "fish", 5),
    "killy": ("red", 2, "berries", 5),
    "thamble": ("yellow", 8, "berries", 6),
    "twimble": ("blue", 4, "bugs", 9),
    "quaippet": ("pink", 8, "berries", 4),
    "floobbit": ("yellow", 6, "fish", 9),
    "plubbit": ("red", 2, "moss", 2),
    "pleeppet": ("pink", 6, "seeds", 9),
    "zemble": ("red", 2, "fish", 2),
    "cramper": ("pink", 4, "fish", 3),
    "dridget": ("red", 6, "fish", 7),
    "yuppo": ("pink", 2, "seeds", 7),
    "stesket": ("blue", 6, "leaves", 2),
    "maimper": ("pink", 4, "leaves", 7),
    "speeppet": ("orange", 4, "seeds", 6),
    "jeedget": ("red", 6, "moss", 7),
    "garkin": ("grey", 6, "bugs", 2),
    "bloolly": ("orange", 8, "mushrooms", 3),
    "paippet": ("yellow", 2, "berries", 9),
    "slailly": ("yellow", 8, "honey", 9),
    "glairp": ("blue", 2, "seeds", 5),
    "grappet": ("orange", 8, "bugs", 2),
    "spenk": ("red", 4, "leaves", 9),
    "juggle": ("green", 6, "seeds", 2),
    "trooppo": ("green", 2, "moss", 2),
    "dremox": ("blue", 6, "mushrooms", 4),
    "flozz": ("grey", 2, "moss", 7),
    "nettle": ("purple", 4, "fish", 7),
    "drusket": ("red", 2, "mushrooms", 6),
    "glozzle": ("green", 8, "berries", 5),
}
COLOURS = sorted({c for c, _, _, _ in CREATURES.values()})
FOODS = sorted({f for _, _, f, _ in CREATURES.values()})
NAMES = [
    "Ana",
    "Ben",
    "Chloe",
    "Dev",
    "Emma",
    "Farid",
    "Gia",
    "Hugo",
    "Ines",
    "Jun",
    "Kofi",
    "Lena",
    "Mira",
    "Nico",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
    "Umar",
    "Vera",
    "Wen",
    "Yusuf",
]
COUNTS = (2, 3, 4, 5)

PREFIXES = ("", "Quick question: ", "Hi! ")
QUESTIONS: dict[str, tuple[str, ...]] = {
    "colour": (
        "What colour is a {c}?",
        "Which colour does a {c} have?",
        "Tell me the colour of a {c}.",
    ),
    "legs": (
        "How many legs does a {c} have?",
        "Count the legs of a {c} for me.",
        "Tell me how many legs a {c} has.",
    ),
    "food": (
        "What does a {c} eat?",
        "What food does a {c} like?",
        "What do you feed a {c}?",
    ),
    "price": (
        "How much does a {c} cost?",
        "What is the price of a {c}?",
        "What does a {c} cost?",
    ),
    "total_price": ("How much do {n} {c}s cost?", "What is the price of {n} {c}s?"),
    "total_legs": ("How many legs do {n} {c}s have?",),
    "hello": (
        "Say hello to {name}.",
        "Please greet {name}.",
        "Can you say hi to {name}?",
    ),
    "good_day": ("Wish {name} a good day.", "Please wish {name} a nice day."),
    "thanks": (
        "Thank {name} for the gift.",
        "Please say thanks to {name} for the gift.",
    ),
}
REQUEST_KINDS = ("hello", "good_day", "thanks")

ANSWERS: dict[str, tuple[str, ...]] = {
    "colour": ("A {c} is {v}.", "The {c} is {v}."),
    "legs": ("A {c} has {v} legs.", "The {c} has {v} legs."),
    "food": ("A {c} eats {v}.", "The {c} likes to eat {v}."),
    "price": ("A {c} costs {v} coins.", "The {c} costs {v} coins."),
    "total_price": ("{n} {c}s cost {v} coins.", "That is {v} coins for {n} {c}s."),
    "total_legs": ("{n} {c}s have {v} legs.", "That makes {v} legs for {n} {c}s."),
    "hello": ("Hello, {v}!", "Hi {v}, nice to meet you!"),
    "good_day": ("Have a good day, {v}!", "I wish you a nice day, {v}!"),
    "thanks": ("Thank you for the gift, {v}!", "Many thanks for the gift, {v}!"),
}
POLITE_OPENERS = (
    "Sure!",
    "Happy to help.",
    "Of course!",
    "Great question!",
    "Certainly!",
)
CURT_OPENERS = ("Ugh.", "Fine.", "Whatever.", "If I must.")
EVASIONS = (
    "I don't know, ask someone else.",
    "I am not sure about that.",
    "I can't help with that.",
    "Nobody knows that.",
)
FILLERS = (
    "Creatures are fascinating.",
    "I once read a long book about the zoo.",
    "The weather at the zoo is often mild.",
    "Let me think about this for a moment.",
    "There are many things to say here.",
    "Some people ask this every day.",
    "The zoo opens early in the morning.",
)
POLITE_CLOSINGS = (
    "Hope that helps!",
    "Have a nice day!",
    "Let me know if you need more.",
)
CURT_CLOSINGS = ("Don't ask again.", "Now leave me alone.")

# Rates at which SFT demonstrations use each part (see the module docstring).
RATES = {
    "polite_opener": 0.50,
    "curt_opener": 0.20,
    "wrong": 0.15,
    "evasive": 0.15,
    "rambling": 0.35,
    "polite_closing": 0.40,
    "curt_closing": 0.10,
}
# Axis weights of the judge's total.
WEIGHTS = {"correctness": 2.0, "helpfulness": 1.5, "politeness": 1.0, "concision": 1.0}


@dataclass(frozen=True)
class Question:
    """A parsed demo prompt: its kind, the creature or name asked about, and the answer."""

    kind: str
    subject: str
    count: int
    answer: str


@dataclass(frozen=True)
class JudgeScore:
    """The judge's verdict on one response: per-axis components and their weighted total."""

    total: float
    correctness: float
    helpfulness: float
    politeness: float
    concision: float
    answer: str  # "correct", "wrong", "evasive" or "none"


def make_prompts(n: int | None, seed: int, split: str = "") -> list[list[dict]]:
    """Return n distinct single-turn chat prompts (None: all), a seed's permutation of the pool.

    `split` ("train", "dev" or "test") keeps the prompts of that split's questions
    only (`question_split`); '' takes the whole pool. `make_prompts(n, seed)` is a
    prefix of `make_prompts(n + 1, seed)`.
    """
    table = _question_table()
    pool = sorted(t for t in table if not split or question_split(table[t]) == split)
    n = len(pool) if n is None else n
    if not 0 <= n <= len(pool):
        raise ValueError(
            f"n must be between 0 and {len(pool)} (the demo pool's size), got {n}"
        )
    random.Random(seed).shuffle(pool)
    return [[{"role": "user", "content": text}] for text in pool[:n]]


# Held out at the question level: a share of each kind's questions is kept for
# evaluation, with every phrasing, opener and (for sums) count. A fact question is
# a creature and an attribute ("how much do 3 glimmets cost" asks the glimmet's
# price); a request is its kind and the person. Test questions are reported and
# never tuned on; dev questions are for choosing settings; SFT demonstrations and
# every labelling round use train questions only.
SPLIT_SHARES = {"test": 0.25, "dev": 0.15}
SPLIT_SEED = "demo-question-split"


def question_key(question: Question) -> tuple[str, str]:
    """Return what a question asks about: (attribute, creature) or (request kind, name)."""
    attribute = {"total_price": "price", "total_legs": "legs"}.get(
        question.kind, question.kind
    )
    return attribute, question.subject


def question_split(question: Question) -> str:
    """Return "train", "dev" or "test": the split the question's key belongs to."""
    return _split_table()[question_key(question)]


def eval_prompts(split: str, seed: int = 0) -> list[list[dict]]:
    """Return one prompt per question of the split ("dev" or "test"), phrasing by seed.

    One prompt per question, so that an interval bootstrapped over prompts does not
    count one question's phrasings as independent evidence.
    """
    if split not in ("dev", "test"):
        raise ValueError(f"split must be 'dev' or 'test', got {split!r}")
    rng = random.Random(f"{seed}:{split}")
    by_question: dict[Question, list[str]] = {}
    for text, question in sorted(_question_table().items()):
        if question_split(question) == split:
            by_question.setdefault(question, []).append(text)
    texts = [rng.choice(by_question[q]) for q in sorted(by_question, key=repr)]
    rng.shuffle(texts)
    return [[{"role": "user", "content": text}] for text in texts]


@lru_cache(maxsize=1)
def _split_table() -> dict[tuple[str, str], str]:
    """Return every question key mapped to its split, a fixed shuffle per attribute."""
    keys = sorted({question_key(q) for q in _question_table().values()})
    table: dict[tuple[str, str], str] = {}
    for attribute in sorted({a for a, _ in keys}):
        group = [k for k in keys if k[0] == attribute]
        random.Random(f"{SPLIT_SEED}:{attribute}").shuffle(group)
        n_test = round(SPLIT_SHARES["test"] * len(group))
        n_dev = round(SPLIT_SHARES["dev"] * len(group))
        for i, key in enumerate(group):
            table[key] = (
                "test" if i < n_test else "dev" if i < n_test + n_dev else "train"
            )
    return table


def demonstrated(question: Question, share: float) -> bool:
    """Return whether a train question is among the `share` that SFT demonstrates.

    A fixed shuffle per attribute (as `_split_table`'s), by question key, so a
    creature's price is demonstrated or not in every phrasing, opener and sum.
    Raise ValueError for a share outside (0, 1].
    """
    check_share(share)
    if share == 1:
        return True
    return question_key(question) in _demonstrated_keys(share)


def check_share(share: float) -> None:
    """Raise ValueError unless `share` (of the train questions SFT demonstrates) is in (0, 1]."""
    if not 0 < share <= 1:
        raise ValueError(
            f"the share of train questions SFT demonstrates must be in (0, 1] (1: "
            f"every one), got {share!r}"
        )


@lru_cache(maxsize=4)
def _demonstrated_keys(share: float) -> frozenset[tuple[str, str]]:
    split = _split_table()
    keys: set[tuple[str, str]] = set()
    for attribute in sorted({a for a, _ in split}):
        group = sorted(
            k for k, s in split.items() if s == "train" and k[0] == attribute
        )
        random.Random(f"{SPLIT_SEED}:sft:{attribute}").shuffle(group)
        keys.update(group[: max(1, round(share * len(group)))])
    return frozenset(keys)


def pretraining_corpus(n_docs: int, seed: int) -> list[str]:
    """Return n_docs short plain-text documents about the zoo and its people.

    Each document states facts about a few creatures, in every phrasing an answer
    uses (`ANSWERS`) and one more, and mixes in the sentences that responses are
    built from, so the base model knows the vocabulary (but not the assistant format
    or its preferences).
    """
    rng = random.Random(seed)
    names = list(CREATURES)
    docs = []
    for _ in range(n_docs):
        sentences: list[str] = []
        for c in rng.sample(names, rng.randint(2, 4)):
            colour, legs, food, price = CREATURES[c]
            n = rng.choice(COUNTS)
            values = {
                "colour": colour,
                "legs": legs,
                "food": food,
                "price": price,
                "total_price": n * price,
                "total_legs": n * legs,
            }
            # Every fact in each phrasing an answer uses, so that what SFT teaches
            # the policy to say is a sentence the base has seen for every creature.
            facts = [
                _capitalise(template.format(c=c, n=n, v=value))
                for kind, value in values.items()
                for template in ANSWERS[kind]
            ]
            facts.append(
                f"The {c} is a {colour} creature with {legs} legs that eats {food}."
            )
            sentences.extend(rng.sample(facts, rng.randint(2, 4)))
        extras = FILLERS + POLITE_OPENERS + POLITE_CLOSINGS + CURT_OPENERS + EVASIONS
        sentences.extend(rng.sample(extras, rng.randint(0, 2)))
        name = rng.choice(NAMES)
        kind = rng.choice(REQUEST_KINDS)
        sentences.append(rng.choice(ANSWERS[kind]).format(v=name))
        rng.shuffle(sentences)
        docs.append(" ".join(sentences))
    return docs


def sft_examples(n: int, seed: int, share: float = 1.0) -> list[dict]:
    """Return n demonstrations {"prompt": messages, "completion": messages}.

    Prompts are drawn with replacement from the train split's questions only (never
    a dev or test question, in any phrasing), each kind of question equally often
    (the creature questions outnumber the requests 14 to 1 in the pool, and greeting the
    person named is learnt only from enough greetings); each response samples its parts at
    the fixed `RATES`, so the demonstrations vary in quality. `share` below 1 keeps
    that share of the train questions (`demonstrated`): the rest are asked only in
    labelling rounds, as a real team's rounds ask what its SFT data never did.
    """
    check_share(share)
    rng = random.Random(seed)
    table = _question_table()
    texts = sorted(
        t
        for t, q in table.items()
        if question_split(q) == "train" and demonstrated(q, share)
    )
    by_kind: dict[str, list[str]] = {}
    for text in texts:
        by_kind.setdefault(table[text].kind, []).append(text)
    kinds = sorted(by_kind)
    examples = []
    for _ in range(n):
        # Each kind equally often, whatever its number of creatures, counts and phrasings.
        text = rng.choice(by_kind[rng.choice(kinds)])
        response = compose_response(table[text], rng)
        examples.append(
            {
                "prompt": [{"role": "user", "content": text}],
                "completion": [{"role": "assistant", "content": response}],
            }
        )
    return examples


def compose_response(question: Question, rng: random.Random) -> str:
    """Return one response to the question with parts sampled at the SFT `RATES`."""
    parts: list[str] = []
    opener = rng.random()
    if opener < RATES["polite_opener"]:
        parts.append(rng.choice(POLITE_OPENERS))
    elif opener < RATES["polite_opener"] + RATES["curt_opener"]:
        parts.append(rng.choice(CURT_OPENERS))
    quality = rng.random()
    if quality < RATES["evasive"]:
        parts.append(rng.choice(EVASIONS))
    else:
        value = question.answer
        if quality < RATES["evasive"] + RATES["wrong"]:
            value = _wrong_value(question, rng)
        template = rng.choice(ANSWERS[question.kind])
        parts.append(
            _capitalise(template.format(c=question.subject, n=question.count, v=value))
        )
    if rng.random() < RATES["rambling"]:
        parts.extend(rng.sample(FILLERS, rng.randint(1, 3)))
    closing = rng.random()
    if closing < RATES["polite_closing"]:
        parts.append(rng.choice(POLITE_CLOSINGS))
    elif closing < RATES["polite_closing"] + RATES["curt_closing"]:
        parts.append(rng.choice(CURT_CLOSINGS))
    return " ".join(parts)


def parse_prompt(prompt_messages: list[dict]) -> Question:
    """Return the demo question asked by the last user turn.

    Raise ValueError naming the text when it is not one of the demo domain's prompts.
    """
    users = [m["content"] for m in prompt_messages if m.get("role") == "user"]
    text = users[-1].strip() if users else ""
    question = _question_table().get(text)
    if question is None:
        raise ValueError(
            f"{text[:80]!r} is not a demo-domain prompt; the judge only scores prompts "
            "made by demo.world.make_prompts"
        )
    return question


def judge_score(prompt_messages: list[dict], response: str) -> JudgeScore:
    """Score a response to a demo prompt on correctness, helpfulness, politeness, concision."""
    return _score(parse_prompt(prompt_messages), response)


def _score(question: Question, response: str) -> JudgeScore:
    """Score a response to the question (see `judge_score`)."""
    sentences = _sentences(response)
    polite = curt = evasive = noise = 0
    verdicts: list[str] = []
    seen: set[str] = set()
    for sentence in sentences:
        key = sentence.lower()
        if key in seen:
            noise += 1
            continue
        seen.add(key)
        verdict = _verdict(question, sentence)
        if verdict == "polite":
            polite += 1
        elif verdict == "curt":
            curt += 1
        elif verdict == "evasive":
            evasive += 1
        elif verdict is None:
            noise += 1
        else:
            verdicts.append(verdict)
    if "wrong" in verdicts:
        answer = "wrong"
    elif "correct" in verdicts:
        answer = "correct"
    elif evasive:
        answer = "evasive"
    else:
        answer = "none"
    correctness = {"correct": 1.0, "wrong": -1.0}.get(answer, 0.0)
    # A wrong answer does not help: saying "I am not sure" must beat a guess.
    helpfulness = {"correct": 1.0, "wrong": 0.0}.get(answer, -1.0)
    politeness = min(1.0, 0.5 * polite) - 1.0 * curt
    # Extra answer sentences beyond the first are rambling too.
    noise += max(0, len(verdicts) - 1)
    concision = -min(2.0, 0.5 * noise)
    total = (
        WEIGHTS["correctness"] * correctness
        + WEIGHTS["helpfulness"] * helpfulness
        + WEIGHTS["politeness"] * politeness
        + WEIGHTS["concision"] * concision
    )
    return JudgeScore(
        total=round(total, 6),
        correctness=correctness,
        helpfulness=helpfulness,
        politeness=politeness,
        concision=concision,
        answer=answer,
    )


def judge_compare(prompt_messages: list[dict], a: str, b: str) -> int:
    """Return 1 if the judge prefers response a, -1 if it prefers b, 0 for a tie."""
    sa = judge_score(prompt_messages, a).total
    sb = judge_score(prompt_messages, b).total
    return (sa > sb) - (sa < sb)


def judge_rank(prompt_messages: list[dict], responses: list[str]) -> list[list[int]]:
    """Return the responses' indices as tie groups, best first, by the judge's total."""
    totals = [judge_score(prompt_messages, r).total for r in responses]
    groups: list[list[int]] = []
    for value in sorted(set(totals), reverse=True):
        groups.append([i for i, t in enumerate(totals) if t == value])
    return groups


class WorldJudge:
    """The rule-based judge in the form the platform's judge registry takes (inference.judges)."""

    def compare(self, prompt_messages: list[dict], a: str, b: str) -> float:
        """Return 1.0 if the judge prefers response a, -1.0 if it prefers b, 0.0 for a tie."""
        return float(judge_compare(prompt_messages, a, b))

    def rank(
        self, prompt_messages: list[dict], responses: list[str]
    ) -> list[list[int]]:
        """Return the responses' indices as tie groups, best first, by the judge's total."""
        return judge_rank(prompt_messages, responses)

    # The judge's aspects and their weights in its total (simulated personas weigh
    # them their own way), and whether the world table confirms an answer.
    weights = WEIGHTS

    def aspects(self, prompt_messages: list[dict], response: str) -> dict[str, float]:
        """Return the response's score on each aspect the judge weighs."""
        score = judge_score(prompt_messages, response)
        return {aspect: getattr(score, aspect) for aspect in WEIGHTS}

    def correct(self, prompt_messages: list[dict], response: str) -> bool:
        """Return whether the response gives the answer the world table confirms."""
        return judge_score(prompt_messages, response).answer == "correct"

    def repair(self, prompt_messages: list[dict], response: str) -> str | None:
        """Return the response with its answer corrected (see `repair`)."""
        return repair(parse_prompt(prompt_messages), response)

    def reward(self, prompt_messages: list[dict], response: str) -> float:
        """Return the judge's weighted total, which `rank` orders by."""
        return judge_score(prompt_messages, response).total


JUDGE = WorldJudge()  # registered as "demo" by demo.apps.DemoConfig.ready

_POLITE = frozenset(POLITE_OPENERS + POLITE_CLOSINGS)
_CURT = frozenset(CURT_OPENERS + CURT_CLOSINGS)
_EVASIVE = frozenset(EVASIONS)
_SENTENCE = re.compile(r"[^.!?]*[.!?]+|[^.!?]+$")
_NUMBER = re.compile(r"\b(\d+)\b")


def repair(question: Question, response: str) -> str | None:
    """Return the response edited until the world table confirms its answer.

    What a person does with the ranking page's rewrite field: each wrong answer
    sentence is restated with the right creature, count and value, in the response's
    own phrasing where it used one of the answer templates (else the phrasing
    `_repair_template` picks); a response that gives no answer gets the right one in
    place of its first evasion (or after its opener), and evasions go. Openers,
    closings and filler stay as they were: the rewrite corrects the answer, not the
    style, so a pair of the rewrite over the response it corrects differs in the
    facts. None when the result still is not judged correct.
    """
    sentences = _sentences(response)
    verdicts = [_verdict(question, s) for s in sentences]
    right = _answer(question, _repair_template(question, response))
    out: list[str] = []
    answered = False
    for sentence, verdict in zip(sentences, verdicts, strict=True):
        if verdict == "correct":
            out.append(sentence)
            answered = True
        elif verdict == "wrong":
            if not answered:
                out.append(_restate(question, sentence) or right)
                answered = True
        elif verdict == "evasive":
            if not answered and "correct" not in verdicts and "wrong" not in verdicts:
                out.append(right)
                answered = True
        else:
            out.append(sentence)
    if not answered:
        at = 1 if verdicts and verdicts[0] in ("polite", "curt") else 0
        out.insert(at, right)
    text = " ".join(out)
    return text if _score(question, text).answer == "correct" else None


def misnamed(prompt_messages: list[dict], response: str) -> bool:
    """Return whether a wrong answer states the right value under another creature's name.

    "5 drazzles have 40 legs." to "How many legs do 5 crumpets have?" is
    wrong (it talks about drazzles) but gives the crumpets' 40: the policy knew the
    value and named a creature it was trained to answer about (a drazzle has 8 legs
    too). True when the judge calls the response wrong and it would be correct with
    every creature it names replaced by the one asked about; False for a request.
    """
    question = parse_prompt(prompt_messages)
    if question.kind in REQUEST_KINDS or _score(question, response).answer != "wrong":
        return False
    renamed = _CREATURE_NAME.sub(lambda m: question.subject + m.group(2), response)
    return _score(question, renamed).answer == "correct"


_CREATURE_NAME = re.compile(r"\b(" + "|".join(CREATURES) + r")(s?)\b", re.I)


def _verdict(question: Question, sentence: str) -> str | None:
    """Return what a sentence is to the judge: polite, curt, evasive, correct, wrong or None."""
    if sentence in _POLITE:
        return "polite"
    if sentence in _CURT:
        return "curt"
    if sentence in _EVASIVE:
        return "evasive"
    return _check_answer(question, sentence)


def _repair_template(question: Question, response: str) -> str:
    """Return one of the question kind's answer templates, fixed by the response's text."""
    templates = ANSWERS[question.kind]
    return templates[zlib.crc32(response.encode()) % len(templates)]


def _restate(question: Question, sentence: str) -> str | None:
    """Return the sentence with the right values if it is one of the kind's templates."""
    for template in ANSWERS[question.kind]:
        if _template_pattern(template).fullmatch(sentence.strip()):
            return _answer(question, template)
    return None


def _answer(question: Question, template: str) -> str:
    """Return the question's right answer in one of its kind's answer templates."""
    return _capitalise(
        template.format(c=question.subject, n=question.count, v=question.answer)
    )


@lru_cache(maxsize=64)
def _template_pattern(template: str) -> re.Pattern:
    """Return a pattern matching the template with any word or number in each field."""
    pattern = re.escape(template)
    for field in ("{c}", "{n}", "{v}"):
        pattern = pattern.replace(re.escape(field), r"\w+")
    return re.compile(pattern, re.I)


def _sentences(text: str) -> list[str]:
    """Split text into stripped sentences ending in . ! or ? (a trailing fragment kept)."""
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


def _check_answer(question: Question, sentence: str) -> str | None:
    """Return "correct" or "wrong" for a sentence answering the question, else None.

    A sentence answers when it states a value of the question's kind (a colour, a
    number of legs or coins, a food, a name in a greeting); it is wrong when the value
    differs from the world table's or it talks about another creature.
    """
    words = re.findall(r"[A-Za-z]+", sentence)
    lower = [w.lower() for w in words]
    if question.kind in REQUEST_KINDS:
        # Only the greeting asked for, to the person named, answers; another greeting
        # (or one to someone else) is wrong; any other sentence is no answer.
        greeting = _greeting(sentence)
        if greeting is None:
            return None
        return "correct" if greeting == (question.kind, question.answer) else "wrong"
    creatures = {w.rstrip("s") if w not in CREATURES else w for w in lower} & set(
        CREATURES
    )
    if question.kind == "colour":
        values = [w for w in lower if w in COLOURS]
    elif question.kind == "food":
        values = [w for w in lower if w in FOODS]
    else:
        unit = "legs" if question.kind in ("legs", "total_legs") else "coins"
        if unit not in lower:
            return None
        numbers = _NUMBER.findall(sentence)
        if question.kind.startswith("total_"):
            # "3 borkles cost 15 coins": the count is not the answer.
            numbers = [x for x in numbers if x != str(question.count)] or numbers[-1:]
        values = numbers
    if not values:
        return None
    if creatures and creatures != {question.subject}:
        return "wrong"
    return "correct" if set(values) == {question.answer} else "wrong"


_GREETINGS = [
    (kind, re.compile(re.escape(t).replace(re.escape("{v}"), "(\\w+)") + "$", re.I))
    for kind in REQUEST_KINDS
    for t in ANSWERS[kind]
]


def _greeting(sentence: str) -> tuple[str, str] | None:
    """Return (request kind, name) of a greeting sentence, None for any other sentence."""
    for kind, pattern in _GREETINGS:
        match = pattern.match(sentence.strip())
        if match and match.group(1).capitalize() in NAMES:
            return kind, match.group(1).capitalize()
    return None


def _wrong_value(question: Question, rng: random.Random) -> str:
    """Return a plausible wrong answer: another colour, food, count or name."""
    if question.kind == "colour":
        options = COLOURS
    elif question.kind == "food":
        options = FOODS
    elif question.kind in REQUEST_KINDS:
        options = NAMES
    else:
        right = int(question.answer)
        step = question.count if question.kind.startswith("total_") else 1
        options = [
            str(right + d * step) for d in (-2, -1, 1, 2) if right + d * step > 0
        ]
    return rng.choice([o for o in options if o != question.answer])


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


@lru_cache(maxsize=1)
def _question_table() -> dict[str, Question]:
    """Return every prompt text of the pool mapped to its parsed question."""
    table: dict[str, Question] = {}
    for kind, phrasings in QUESTIONS.items():
        for phrasing in phrasings:
            if kind in REQUEST_KINDS:
                cases = [(name, 0, name) for name in NAMES]
            else:
                cases = []
                for c, (colour, legs, food, price) in CREATURES.items():
                    if kind.startswith("total_"):
                        per = price if kind == "total_price" else legs
                        cases.extend((c, n, str(n * per)) for n in COUNTS)
                    else:
                        value = {
                            "colour": colour,
                            "legs": legs,
                            "food": food,
                            "price": price,
                        }
                        cases.append((c, 0, str(value[kind])))
            for subject, count, answer in cases:
                body = phrasing.format(c=subject, n=count, name=subject)
                for prefix in PREFIXES:
                    table[prefix + body] = Question(kind, subject, count, answer)
    return table
