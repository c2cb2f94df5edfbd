"""The demo world: deterministic prompts and data, and a judge that scores each axis."""

import pytest

from demo.world import (
    CREATURES,
    JUDGE,
    JudgeScore,
    demonstrated,
    eval_prompts,
    judge_compare,
    judge_rank,
    judge_score,
    make_prompts,
    misnamed,
    parse_prompt,
    pretraining_corpus,
    question_key,
    question_split,
    sft_examples,
)

COLOUR = [{"role": "user", "content": "What colour is a glimmet?"}]  # blue
TOTAL = [
    {"role": "user", "content": "Quick question: How much do 3 borkles cost?"}
]  # 15
HELLO = [{"role": "user", "content": "Say hello to Ana."}]


@pytest.mark.parametrize(
    "prompt, response, expected",
    [
        # total, correctness, helpfulness, politeness, concision, answer
        (
            COLOUR,
            "Sure! A glimmet is blue. Hope that helps!",
            (4.5, 1, 1, 1, 0, "correct"),
        ),
        (COLOUR, "A glimmet is blue.", (3.5, 1, 1, 0, 0, "correct")),
        (COLOUR, "Happy to help. A glimmet is red.", (-1.5, -1, 0, 0.5, 0, "wrong")),
        (COLOUR, "A borkle is blue.", (-2.0, -1, 0, 0, 0, "wrong")),
        (COLOUR, "Ugh. A glimmet is blue.", (2.5, 1, 1, -1, 0, "correct")),
        (COLOUR, "I don't know, ask someone else.", (-1.5, 0, -1, 0, 0, "evasive")),
        (
            COLOUR,
            "A glimmet is blue. Creatures are fascinating. The zoo opens early in the morning.",
            (2.5, 1, 1, 0, -1, "correct"),
        ),
        (
            COLOUR,
            "A glimmet is blue. A glimmet is blue.",
            (3.0, 1, 1, 0, -0.5, "correct"),
        ),
        (COLOUR, "", (-1.5, 0, -1, 0, 0, "none")),
        (COLOUR, "glim glim blorp", (-2.0, 0, -1, 0, -0.5, "none")),
        (TOTAL, "3 borkles cost 15 coins.", (3.5, 1, 1, 0, 0, "correct")),
        (
            TOTAL,
            "3 borkles cost 12 coins. Don't ask again.",
            (-3.0, -1, 0, -1, 0, "wrong"),
        ),
        (HELLO, "Of course! Hello, Ana!", (4.0, 1, 1, 0.5, 0, "correct")),
        (HELLO, "Hello, Ben!", (-2.0, -1, 0, 0, 0, "wrong")),
        (HELLO, "Thank you for the gift, Ana!", (-2.0, -1, 0, 0, 0, "wrong")),
        (HELLO, "Ana is blue.", (-2.0, 0, -1, 0, -0.5, "none")),
    ],
)
def test_judge_scores_each_axis(prompt, response, expected):
    total, correctness, helpfulness, politeness, concision, answer = expected
    assert judge_score(prompt, response) == JudgeScore(
        total=total,
        correctness=correctness,
        helpfulness=helpfulness,
        politeness=politeness,
        concision=concision,
        answer=answer,
    )


def test_judge_prefers_saying_so_to_a_wrong_guess():
    # A wrong answer does not help: "I am not sure" beats a guess, style being equal.
    for opener, closing in (("", ""), ("Sure! ", " Hope that helps!")):
        unsure = f"{opener}I am not sure about that.{closing}"
        for guess in ("A glimmet is red.", "A glimmet is green."):
            assert judge_compare(COLOUR, unsure, f"{opener}{guess}{closing}") == 1
        assert judge_compare(TOTAL, unsure.strip(), "3 borkles cost 12 coins.") == 1
    assert judge_compare(COLOUR, "A glimmet is blue.", "I am not sure about that.") == 1


@pytest.mark.parametrize(
    "response",
    [
        "Ana is blue.",
        "Ana.",
        "I like Ana.",
        "Have a good day, Ana!",
        "Thank you for the gift, Ana!",
    ],
)
def test_a_greeting_must_greet_the_person_as_asked_not_merely_name_them(response):
    # Only a hello to Ana answers "Say hello to Ana."; another greeting is the wrong
    # answer and any other sentence naming her is no answer.
    assert judge_score(HELLO, response).answer in ("wrong", "none")
    assert judge_compare(HELLO, "Hi Ana, nice to meet you!", response) == 1
    assert judge_score(HELLO, "Hi Ana, nice to meet you!").answer == "correct"


def test_judge_compare_prefers_the_higher_total_and_ties_equal_ones():
    polite = "Sure! A glimmet is blue."
    curt = "Fine. A glimmet is blue."
    assert judge_compare(COLOUR, polite, curt) == 1
    assert judge_compare(COLOUR, curt, polite) == -1
    assert judge_compare(COLOUR, polite, "Certainly! The glimmet is blue.") == 0


def test_the_judges_reward_is_its_total_and_orders_responses_as_rank_does():
    responses = [
        "Fine. A glimmet is blue.",
        "Sure! A glimmet is blue.",
        "I can't help with that.",
        "Certainly! The glimmet is blue.",
        "Sure! A glimmet is red.",
    ]
    rewards = [JUDGE.reward(COLOUR, r) for r in responses]
    order = [
        [i for i, r in enumerate(rewards) if r == value]
        for value in sorted(set(rewards), reverse=True)
    ]
    assert order == JUDGE.rank(COLOUR, responses)
    assert rewards == [judge_score(COLOUR, r).total for r in responses]


def test_judge_rank_returns_tie_groups_best_first():
    responses = [
        "Fine. A glimmet is blue.",
        "Sure! A glimmet is blue.",
        "I can't help with that.",
        "Certainly! The glimmet is blue.",
    ]
    assert judge_rank(COLOUR, responses) == [[1, 3], [0], [2]]


def test_judge_refuses_a_prompt_outside_the_demo_domain():
    with pytest.raises(ValueError, match="is not a demo-domain prompt"):
        judge_score(
            [{"role": "user", "content": "What is love?"}], "Baby don't hurt me."
        )


def test_prompts_are_distinct_deterministic_and_prefixes_of_longer_lists():
    prompts = make_prompts(700, seed=3)
    assert len({p[0]["content"] for p in prompts}) == 700
    assert make_prompts(700, seed=3) == prompts
    assert make_prompts(50, seed=3) == prompts[:50]
    assert make_prompts(50, seed=4) != prompts[:50]
    assert all(p[0]["role"] == "user" and len(p) == 1 for p in prompts)


def test_every_prompt_parses_to_a_question_with_a_known_subject():
    for prompt in make_prompts(300, seed=0):
        question = parse_prompt(prompt)
        assert question.subject in CREATURES or question.kind in (
            "hello",
            "good_day",
            "thanks",
        )


def test_asking_for_more_prompts_than_the_pool_holds_names_the_limit():
    with pytest.raises(ValueError, match="n must be between 0 and 7416"):
        make_prompts(8000, seed=0)


def test_corpus_and_sft_examples_are_deterministic_by_seed():
    assert pretraining_corpus(20, seed=1) == pretraining_corpus(20, seed=1)
    assert pretraining_corpus(20, seed=1) != pretraining_corpus(20, seed=2)
    assert sft_examples(20, seed=1) == sft_examples(20, seed=1)
    assert sft_examples(20, seed=1) != sft_examples(20, seed=2)


def test_the_corpus_states_facts_in_every_phrasing_an_answer_uses():
    """SFT teaches the answer templates; the base must have read each one, or SFT
    says one value for every creature (with 96 creatures: "seeds" for every food)."""
    import re

    from demo.world import ANSWERS

    text = " ".join(pretraining_corpus(400, seed=0))
    for kind in ("colour", "legs", "food", "price", "total_price", "total_legs"):
        for template in ANSWERS[kind]:
            pattern = re.escape(template)
            pattern = pattern.replace(r"\{c\}", "[a-z]+").replace(r"\{n\}", r"\d+")
            pattern = pattern.replace(r"\{v\}", r"\w+")
            assert re.search(pattern, text), template


def test_creature_names_are_distinct_and_none_is_part_of_another():
    names = list(CREATURES)
    assert len(names) == len(set(names)) == 96
    assert not [(a, b) for a in names for b in names if a != b and a in b]


def test_sft_demonstrations_ask_each_kind_of_question_equally_often():
    """Requests are 1 in 14 of the pool; drawn by prompt, SFT greeted the wrong person."""
    from collections import Counter

    kinds = Counter(parse_prompt(e["prompt"]).kind for e in sft_examples(9000, seed=0))
    assert len(kinds) == 9
    assert all(800 <= count <= 1200 for count in kinds.values()), kinds


def test_sft_demonstrations_vary_along_every_axis_at_the_documented_rates():
    examples = sft_examples(4000, seed=0)
    scores = [judge_score(e["prompt"], e["completion"][0]["content"]) for e in examples]
    share = lambda pred: sum(1 for s in scores if pred(s)) / len(scores)  # noqa: E731
    assert examples[0]["completion"][0]["role"] == "assistant"
    assert 0.67 <= share(lambda s: s.answer == "correct") <= 0.73
    assert 0.13 <= share(lambda s: s.answer == "wrong") <= 0.17
    assert 0.13 <= share(lambda s: s.answer == "evasive") <= 0.17
    assert 0.33 <= share(lambda s: s.concision < 0) <= 0.37
    assert 0.25 <= share(lambda s: s.politeness < 0) <= 0.32
    assert share(lambda s: s.answer == "none") == 0.0


def test_the_demo_app_registers_its_judge_as_demo():
    from inference.judges import get_judge, judge_path

    assert judge_path("demo") == "demo.world:JUDGE"
    assert get_judge("demo") is JUDGE


def test_the_registered_judge_compares_and_ranks_as_the_world_does():
    responses = ["Fine. A glimmet is blue.", "Sure! A glimmet is blue.", "Ugh."]

    assert JUDGE.compare(COLOUR, responses[1], responses[0]) == 1.0
    assert JUDGE.compare(COLOUR, responses[0], responses[1]) == -1.0
    assert JUDGE.compare(COLOUR, responses[0], responses[0]) == 0.0
    assert JUDGE.rank(COLOUR, responses) == judge_rank(COLOUR, responses)


def test_held_out_questions_never_occur_in_demonstrations_or_the_labelling_pool():
    # Held out at the question level: a dev or test question (creature x attribute,
    # or request kind x person) is never asked by an SFT demonstration or by a pool
    # prompt, in any phrasing, opener or count.
    held_out = {
        question_key(parse_prompt(p)): split
        for split in ("dev", "test")
        for p in eval_prompts(split)
    }
    demonstrated = {
        question_key(parse_prompt(e["prompt"])) for e in sft_examples(6400, 1)
    }
    pool = {question_key(parse_prompt(p)) for p in make_prompts(None, 0, split="train")}
    assert demonstrated <= pool
    assert not demonstrated & set(held_out)
    assert not pool & set(held_out)
    # Every phrasing of a held-out question is in its split, none in train.
    for prompt in make_prompts(None, 0):
        question = parse_prompt(prompt)
        assert held_out.get(question_key(question), "train") == question_split(question)


def test_a_share_of_train_questions_can_be_left_to_the_labelling_rounds():
    # BuildPlan.sft_question_share: SFT demonstrates that share of each attribute's
    # train questions, by question key (every phrasing and count alike); the rest
    # stay in the labelling pool only. Never a dev or test question either way.
    pool = {question_key(parse_prompt(p)) for p in make_prompts(None, 0, split="train")}
    half = {question_key(parse_prompt(e["prompt"])) for e in sft_examples(6400, 1, 0.5)}
    assert half < pool
    for attribute in {a for a, _ in pool}:
        train = {k for k in pool if k[0] == attribute}
        assert len({k for k in half if k[0] == attribute}) == round(len(train) / 2)
    for prompt in make_prompts(None, 0, split="train"):
        question = parse_prompt(prompt)
        assert demonstrated(question, 0.5) == (question_key(question) in half)
        assert demonstrated(question, 1.0)
    with pytest.raises(ValueError, match=r"SFT demonstrates must be in \(0, 1\]"):
        sft_examples(10, 1, 0.0)
    # Above 1 was read as "every question" by `demonstrated` and refused by
    # `sft_examples`; a plan with it built, then failed. Refused alike, at once.
    with pytest.raises(ValueError, match="got 1.5"):
        demonstrated(parse_prompt(make_prompts(1, 0, split="train")[0]), 1.5)
    from dataclasses import replace

    from demo.policies import PLANS

    with pytest.raises(ValueError, match="got 0"):
        replace(PLANS["micro"], sft_question_share=0)


def test_the_split_holds_out_a_quarter_for_test_and_some_for_dev_of_every_kind():
    test, dev = eval_prompts("test"), eval_prompts("dev")
    assert (len(test), len(dev)) == (306, 180)
    assert len({p[0]["content"] for p in test}) == 306  # one prompt per question
    kinds = {parse_prompt(p).kind for p in test}
    assert kinds == {parse_prompt(p).kind for p in make_prompts(None, 0)}
    # "How much do 3 glimmets cost?" asks the glimmet's price: same key as its price.
    price = parse_prompt([{"role": "user", "content": "How much does a glimmet cost?"}])
    total = parse_prompt([{"role": "user", "content": "How much do 3 glimmets cost?"}])
    assert question_key(price) == question_key(total) == ("price", "glimmet")
    assert eval_prompts("test", seed=0) == eval_prompts("test", seed=0)
    with pytest.raises(ValueError, match="split must be 'dev' or 'test'"):
        eval_prompts("train")


def test_the_judge_offers_aspects_and_checks_answers_against_the_world():
    assert JUDGE.aspects(COLOUR, "Sure! A glimmet is red.") == {
        "correctness": -1.0,
        "helpfulness": 0.0,
        "politeness": 0.5,
        "concision": 0.0,
    }
    assert JUDGE.correct(COLOUR, "A glimmet is blue.") is True
    assert JUDGE.correct(COLOUR, "I am not sure about that.") is False
    assert JUDGE.correct(HELLO, "Ana is blue.") is False


FEED = [{"role": "user", "content": "What do you feed a glimmet?"}]  # moss
LEGS = [{"role": "user", "content": "How many legs do 3 zindles have?"}]  # 24


@pytest.mark.parametrize(
    "prompt, response, repaired",
    [
        # A wrong answer is restated in its own phrasing; the style stays.
        (
            FEED,
            "Sure! The zindle likes to eat fish. Hope that helps!",
            "Sure! The glimmet likes to eat moss. Hope that helps!",
        ),
        (
            LEGS,
            "That makes 16 legs for 4 hoddles.",
            "That makes 24 legs for 3 zindles.",
        ),
        (
            TOTAL,
            "Ugh. 3 borkles cost 12 coins. Now leave me alone.",
            "Ugh. 3 borkles cost 15 coins. Now leave me alone.",
        ),
        (HELLO, "Of course! Hello, Ben!", "Of course! Hello, Ana!"),
        (HELLO, "Have a good day, Ana!", "Hello, Ana!"),
        # A correct answer is left alone, filler and all.
        (
            COLOUR,
            "A glimmet is blue. Creatures are fascinating.",
            "A glimmet is blue. Creatures are fascinating.",
        ),
        # A later wrong answer beside a right one goes.
        (COLOUR, "A glimmet is blue. A glimmet is red.", "A glimmet is blue."),
    ],
)
def test_the_demo_repair_corrects_the_answer_and_keeps_the_rest(
    prompt, response, repaired
):
    assert JUDGE.repair(prompt, response) == repaired
    assert JUDGE.correct(prompt, repaired)


def test_the_demo_repair_answers_in_place_of_an_evasion_or_after_the_opener():
    evasive = JUDGE.repair(COLOUR, "Ugh. I am not sure about that. Don't ask again.")
    assert evasive in (
        "Ugh. A glimmet is blue. Don't ask again.",
        "Ugh. The glimmet is blue. Don't ask again.",
    )
    assert JUDGE.repair(COLOUR, "Happy to help. Hope that helps!") in (
        "Happy to help. A glimmet is blue. Hope that helps!",
        "Happy to help. The glimmet is blue. Hope that helps!",
    )
    assert JUDGE.repair(HELLO, "") in ("Hello, Ana!", "Hi Ana, nice to meet you!")
    # The same response always gets the same rewrite.
    assert JUDGE.repair(COLOUR, "Nobody knows that.") == JUDGE.repair(
        COLOUR, "Nobody knows that."
    )


def test_every_sampled_response_repairs_to_a_correct_one_of_the_same_politeness():
    """Over SFT-style responses to every kind of question (two glued together as well,
    as a rambling sample is), the repair is judged correct, and, having no evasion to
    drop, just as polite as the response it corrects."""
    import random

    from demo.world import _question_table as questions
    from demo.world import compose_response

    rng = random.Random(3)
    table = questions()
    texts = sorted(table)
    for _ in range(2000):
        text = rng.choice(texts)
        response = compose_response(table[text], rng)
        if rng.random() < 0.2:
            response += " " + compose_response(table[text], rng)
        prompt = [{"role": "user", "content": text}]
        repaired = JUDGE.repair(prompt, response)
        assert repaired is not None and JUDGE.correct(prompt, repaired), response
        if judge_score(prompt, response).answer != "evasive":
            before = JUDGE.aspects(prompt, response)["politeness"]
            assert JUDGE.aspects(prompt, repaired)["politeness"] == before, response


@pytest.mark.parametrize(
    "prompt, response, expected",
    [
        # The value asked for, under a creature that shares it: misnamed.
        (FEED, "Sure! The drazzle likes to eat moss.", True),  # drazzles eat moss
        (LEGS, "3 sprocks have 24 legs.", True),  # sprocks have 8 legs
        (LEGS, "That makes 24 legs for 3 Snazzles.", True),
        # A wrong value is plain wrong, whatever the name.
        (FEED, "The zindle likes to eat fish.", False),
        (LEGS, "3 zindles have 18 legs.", False),
        # Right, evasive, silent, or a request: never misnamed.
        (FEED, "A glimmet eats moss.", False),
        (FEED, "I am not sure about that.", False),
        (FEED, "Creatures are fascinating.", False),
        (HELLO, "Hello, Ben!", False),
    ],
)
def test_misnamed_finds_the_right_value_under_another_creatures_name(
    prompt, response, expected
):
    assert misnamed(prompt, response) is expected


def test_the_demo_repair_refuses_a_prompt_outside_the_world():
    from inference.judges import judge_offers

    assert judge_offers(JUDGE, "repair")
    with pytest.raises(ValueError, match="is not a demo-domain prompt"):
        JUDGE.repair([{"role": "user", "content": "Write a poem."}], "No.")
