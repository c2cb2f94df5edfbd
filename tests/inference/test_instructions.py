"""The verifiable-instructions family: each checker, the loose reading, the split, the judge."""

import json
import re

import pytest

from inference.instructions import (
    CONFLICTS,
    JUDGE,
    KINDS,
    MAX_CONSTRAINTS,
    SPLITS,
    TOPICS,
    Constraint,
    accuracy,
    combinations_of_kinds,
    make_requests,
    parse_constraints,
    repair,
    split_of,
    substantive,
    topic_of,
)

# For each kind: a constraint, a response that follows it and one that does not.
CASES = {
    "max_words": (
        Constraint("max_words", (5,)),
        "Boil water, add the tea.",
        "Boil the water first, then add the tea and wait.",
    ),
    "bullets": (
        Constraint("bullets", (3,)),
        "Tips:\n* Pack light\n* Bring a map\n- Charge your phone",
        "* Pack light\n* Bring a map",
    ),
    "lowercase": (
        Constraint("lowercase", ()),
        "water the plants once a week.",
        "Water the plants once a week.",
    ),
    "include": (
        Constraint("include", ("morning",)),
        "A walk in the Morning clears the head.",
        "A walk in the mornings clears the head.",
    ),
    "avoid": (
        Constraint("avoid", ("easy",)),
        "It is uneasy at first but gets simpler.",
        "It is Easy once you start.",
    ),
    "end_phrase": (
        Constraint("end_phrase", ("Thanks for reading.",)),
        "Keep a list and stick to it. Thanks for reading.  ",
        "Thanks for reading. Keep a list and stick to it.",
    ),
    "json": (
        Constraint("json", ("title", "summary")),
        json.dumps({"title": "Tea", "summary": "Boil, steep, sip.", "extra": 1}),
        json.dumps({"title": "Tea", "body": "Boil, steep, sip."}),
    ),
    "no_commas": (
        Constraint("no_commas", ()),
        "Rinse the rice and cook it slowly.",
        "Rinse the rice, then cook it slowly.",
    ),
    "paragraphs": (
        Constraint("paragraphs", (2,)),
        "Bread needs time.\n\n  \nKnead it well and let it rise.",
        "Bread needs time.\nKnead it well and let it rise.",
    ),
}


def test_every_kind_has_a_case():
    assert set(CASES) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_checker_passes_a_good_response_and_fails_a_bad_one(kind):
    constraint, good, bad = CASES[kind]

    assert constraint.follows(good)
    assert not constraint.follows(bad)
    assert not constraint.follows("   ")  # an empty response follows nothing


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_constraint_is_read_back_from_its_wording(kind):
    constraint = CASES[kind][0]

    assert parse_constraints(
        f"Give some advice on cooking rice. {constraint.text}"
    ) == [constraint]


def test_a_fenced_json_block_counts_as_json_strictly():
    constraint = Constraint("json", ("answer", "reason"))

    assert constraint.follows('```json\n{"answer": "yes", "reason": "because"}\n```')
    assert not constraint.follows('["answer", "reason"]')


def test_the_loose_reading_forgives_a_first_line_and_markdown_asterisks():
    lowercase = Constraint("lowercase", ())
    ending = Constraint("end_phrase", ("Have a wonderful day!",))
    response = "Sure! Here it is:\nsip slowly and enjoy.\nHave a wonderful day!"

    assert not lowercase.follows(response)
    assert lowercase.follows_loosely("Sure!\nsip slowly and enjoy.")
    assert ending.follows(response)
    assert not ending.follows("Rest well. **Have a wonderful day!**")
    assert ending.follows_loosely("Rest well. **Have a wonderful day!**")
    assert not Constraint("no_commas", ()).follows_loosely("one, two, three")


def test_accuracy_counts_prompts_and_instructions_strictly_and_loosely():
    lower = Constraint("lowercase", ())
    commas = Constraint("no_commas", ())
    items = [
        ([lower, commas], "all fine here"),  # both
        ([lower, commas], "Title\nall fine, mostly\nyes"),  # lowercase loosely
        ([commas], "no commas at all"),  # the one
    ]

    assert accuracy(items) == {
        "prompt_strict": pytest.approx(2 / 3),
        "prompt_loose": pytest.approx(2 / 3),
        "instruction_strict": pytest.approx(3 / 5),
        "instruction_loose": pytest.approx(4 / 5),
    }


def test_combinations_have_one_to_three_kinds_and_no_conflicting_pair():
    combos = combinations_of_kinds()

    assert {len(c) for c in combos} == set(range(1, MAX_CONSTRAINTS + 1))
    assert ("json", "no_commas") not in combos
    for combo in combos:
        assert not any(
            frozenset((a, b)) in CONFLICTS for a in combo for b in combo if a != b
        )


def test_no_test_combination_and_topic_occurs_in_train_or_dev():
    requests = {split: make_requests(400, split, seed=3) for split in SPLITS}
    keys = {
        split: {(r.combination, r.topic) for r in found}
        for split, found in requests.items()
    }

    assert keys["test"].isdisjoint(keys["train"])
    assert keys["test"].isdisjoint(keys["dev"])
    assert keys["dev"].isdisjoint(keys["train"])
    for split, found in requests.items():
        assert {r.split for r in found} == {split}
        # Every constraint kind and most topics are seen in every split.
        assert {c.kind for r in found for c in r.constraints} == set(KINDS)


def test_every_pair_has_exactly_one_split_and_the_shares_are_about_right():
    pairs = [(c, t) for c in combinations_of_kinds() for t in TOPICS]
    counts = {split: 0 for split in SPLITS}
    for combo, topic in pairs:
        counts[split_of(combo, topic)] += 1

    assert sum(counts.values()) == len(pairs)
    assert 0.65 < counts["train"] / len(pairs) < 0.75
    assert 0.1 < counts["test"] / len(pairs) < 0.2


def test_requests_are_distinct_reproducible_balanced_and_read_back_exactly():
    requests = make_requests(300, "train", seed=0)

    assert requests == make_requests(300, "train", seed=0)
    assert requests != make_requests(300, "train", seed=1)
    assert len({r.text for r in requests}) == 300
    assert (
        sorted(len(r.constraints) for r in requests)
        == [1] * 100 + [2] * 100 + [3] * 100
    )
    for r in requests:
        assert parse_constraints(r.text) == list(r.constraints)
        words = {c.args[0] for c in r.constraints if c.kind in ("include", "avoid")}
        assert len(words) == sum(c.kind in ("include", "avoid") for c in r.constraints)


def test_asking_for_more_requests_than_a_split_holds_is_refused():
    with pytest.raises(ValueError, match="the test split has"):
        make_requests(9_999, "test")
    with pytest.raises(ValueError, match="split must be one of"):
        make_requests(1, "holdout")


def test_the_judge_ranks_by_constraints_followed_strictly_then_loosely():
    prompt = [
        {
            "role": "user",
            "content": "Give some advice on cooking rice. Do not use any commas. "
            "Write your whole response in lowercase letters.",
        }
    ]
    both = "rinse it and use less water."
    loose_lower = "Tip:\nrinse it and use less water."
    one = "Rinse it and use less water."
    none = "Rinse it, and use less water."

    assert JUDGE.rank(prompt, [none, one, both, loose_lower, "rinse it well."]) == [
        [2, 4],
        [3],
        [1],
        [0],
    ]
    assert JUDGE.compare(prompt, both, one) == 1.0
    assert JUDGE.compare(prompt, none, one) == -1.0
    assert JUDGE.compare(prompt, both, "rinse it well.") == 0.0


def rank_by(scores: list[float]) -> list[list[int]]:
    """Tie groups of equal scores, highest first: the order a reward gives."""
    return [
        [i for i, score in enumerate(scores) if score == value]
        for value in sorted(set(scores), reverse=True)
    ]


def test_the_judges_reward_orders_responses_as_its_rank_does():
    prompt = [
        {
            "role": "user",
            "content": "Give some advice on cooking rice. Do not use any commas. "
            "Write your whole response in lowercase letters.",
        }
    ]
    responses = [
        "Rinse it, and use less water.",  # none
        "Rinse it and use less water.",  # one strictly, one loosely
        "rinse it and use less water.",  # both strictly
        "Tip:\nrinse it and use less water.",  # one strictly, both loosely
        "rinse it well.",
        "",
    ]
    rewards = [JUDGE.reward(prompt, r) for r in responses]

    assert rank_by(rewards) == JUDGE.rank(prompt, responses)
    assert rewards[2] == rewards[4] == 1.0  # every constraint, strictly
    assert rewards[0] == rewards[5] == 0.0
    # The loose count breaks ties only: one strict constraint outweighs it.
    assert rewards[1] < rewards[3] < rewards[2]
    three = [
        {
            "role": "user",
            "content": "Give some advice on cooking rice. Do not use any commas. "
            "Write your whole response in lowercase letters. Answer in at most 6 words.",
        }
    ]
    one_strictly_all_loosely = "Tip:\nrinse it and use less water."
    two_strictly = "rinse it, and use less water."
    assert JUDGE.score(three, one_strictly_all_loosely) == (1, 3)
    assert JUDGE.score(three, two_strictly) == (2, 2)
    assert JUDGE.reward(three, two_strictly) > JUDGE.reward(
        three, one_strictly_all_loosely
    )
    # Across many drawn requests and responses, too.
    for request in make_requests(40, "dev", seed=3):
        messages = [{"role": "user", "content": request.text}]
        drawn = [repair(request.constraints, "Some words here.") or "", *responses]
        scores = [JUDGE.reward(messages, r) for r in drawn]
        assert rank_by(scores) == JUDGE.rank(messages, drawn), request.text
        assert all(0.0 <= x <= 1.0 for x in scores)


def test_a_request_without_constraints_rewards_nothing():
    prompt = [{"role": "user", "content": "Tell me about rice."}]
    assert JUDGE.reward(prompt, "Rice is a grain.") == 0.0


def test_the_judge_calls_correct_only_a_response_following_every_constraint_strictly():
    prompt = [
        {
            "role": "user",
            "content": "Give some advice on cooking rice. Do not use any commas. "
            "Write your whole response in lowercase letters.",
        }
    ]
    assert JUDGE.correct(prompt, "rinse it and use less water.")
    assert not JUDGE.correct(prompt, "Rinse it and use less water.")  # one of two
    assert not JUDGE.correct(prompt, "Tip:\nrinse it and use less water.")  # loosely
    assert JUDGE.correct_loosely(prompt, "Tip:\nrinse it and use less water.")
    assert not JUDGE.correct_loosely(prompt, "Rinse it, and use less water.")
    assert not JUDGE.correct(prompt, "")
    assert not JUDGE.correct_loosely(prompt, "")
    # The loop reports it as accuracy because the judge offers it.
    from inference.judges import judge_offers

    assert judge_offers(JUDGE, "correct") and judge_offers(JUDGE, "correct_loosely")
    # GRPO can take it as a verifiable reward because it offers one.
    assert judge_offers(JUDGE, "reward")


def test_substantive_answers_say_something_on_the_requests_subject():
    text = (
        "Write a short note about choosing a good book. Answer in at most 60 words. "
        "Write your whole response in lowercase letters."
    )
    prompt = [{"role": "user", "content": text}]
    assert topic_of(text) == "choosing a good book"
    # What the sft-dpo policy wrote: it follows both constraints and says nothing.
    assert JUDGE.correct(prompt, "always smiling")
    assert not substantive(text, "always smiling")
    assert not JUDGE.correct_substantively(prompt, "always smiling")
    on_topic = (
        "pick a book whose first page makes you want the second and read it slowly"
    )
    assert substantive(text, on_topic) and JUDGE.correct_substantively(prompt, on_topic)
    # Long enough but not on the subject; on the subject but correct only loosely.
    off_topic = (
        "always smile at people and keep going every day of the week no matter what"
    )
    assert not substantive(text, off_topic)
    assert not JUDGE.correct_substantively(prompt, on_topic.capitalize())
    # Plurals and stems meet the topic word; a word limit lowers the floor of words.
    assert substantive(
        "Give some advice on planting tomatoes.", " ".join(["a"] * 9) + " tomato"
    )
    assert substantive(
        "Give some advice on fixing a flat bicycle tyre. Answer in at most 5 words.",
        "patch both tyres with care",
    )
    assert not substantive(
        "Give some advice on fixing a flat bicycle tyre. Answer in at most 5 words.",
        "patch the tyres",
    )
    assert not substantive(
        "Give some advice on cooking rice.", "rice " * 5
    )  # under the floor
    # A request from elsewhere (no generated topic): only the floor of words counts.
    assert topic_of("Summarise this contract.") is None
    assert substantive("Summarise this contract.", " ".join(["word"] * 10))
    from inference.judges import judge_offers

    assert judge_offers(JUDGE, "correct_substantively")


# What SmolLM2's candidates look like: a list with a preamble, plain prose with
# commas and capitals, a markdown heading, a one-word answer.
CANDIDATES = (
    "Sure! Here are some tips for you:\n\n1. Boil the water, then add the tea.\n"
    "2. Wait three minutes. It is easy and simple.\n\nI hope you enjoy it, friend!",
    "Making tea is simple. You always need hot water, a cup and a tea bag. Pour, "
    "wait and drink in the morning with a friend. It's important to plan your time.",
    "## A Plan\n- Start early\n- Keep it simple\n- Have fun, always",
    "ok",
)


@pytest.mark.parametrize("split", SPLITS)
def test_repair_makes_every_request_followed_strictly_keeping_the_candidates_words(
    split,
):
    """A simulated annotator's rewrite: every request of the split, every kind of
    candidate, comes back following all its constraints, and starts from the
    candidate's own words rather than a canned answer."""
    requests = make_requests(50, split)
    for request in requests:
        for candidate in CANDIDATES:
            fixed = repair(request.constraints, candidate)
            assert fixed is not None, (request.text, candidate)
            assert all(c.follows(fixed) for c in request.constraints)
            first = re.sub(r"[^a-z]", "", candidate.split()[0].lower())
            kept = first in re.sub(r"[^a-z ]", "", fixed.lower())
            assert kept or "max_words" in request.combination, (request.text, fixed)
    assert JUDGE.correct(requests[0].messages, JUDGE.repair(requests[0].messages, "ok"))


def test_repair_gives_none_for_a_response_without_words_or_a_request_without_constraints():
    (request,) = make_requests(1, "dev")
    assert repair(request.constraints, "   ") is None
    assert JUDGE.repair([{"role": "user", "content": "Say hi."}], "Hi.") is None
    tight = (Constraint("max_words", (3,)), Constraint("bullets", (4,)))
    assert repair(tight, "One two three four five six seven eight.") is None
