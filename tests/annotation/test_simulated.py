"""Simulated annotators: judge, reward model, noise, and the path they share with people."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from annotation.models import (
    AnnotatorProfile,
    Lease,
    Prompt,
    Ranking,
    RankingTask,
    Response,
)
from annotation.simulated import (
    JudgeAnnotator,
    NoisyAnnotator,
    PersonaAnnotator,
    RewardModelAnnotator,
    Skip,
    annotate,
    order_by_scores,
    personas,
    simulated_agreement,
    simulated_user,
)
from demo.world import ANSWERS, JUDGE, make_prompts, parse_prompt
from inference.models import Policy
from tests.conftest import make_user

PROMPT = make_prompts(1, seed=0)[0]


def good_and_bad(prompt: list[dict]) -> tuple[str, str, str]:
    """Return a polite correct, a plain correct and a curt evasive response."""
    q = parse_prompt(prompt)
    answer = ANSWERS[q.kind][0].format(c=q.subject, n=q.count, v=q.answer)
    answer = answer[0].upper() + answer[1:]
    return (
        f"Sure! {answer} Hope that helps!",
        answer,
        "Ugh. I don't know, ask someone else. Don't ask again.",
    )


class Fixed:
    """A stand-in annotator that always returns the same decision."""

    simulator = "fixed"

    def __init__(self, decision):
        self.decision = decision

    def decide(self, prompt_messages, responses, *, key):
        return self.decision


def test_judge_ranks_polite_correct_above_plain_above_curt_evasive():
    best, plain, worst = good_and_bad(PROMPT)
    order = JudgeAnnotator(JUDGE).decide(PROMPT, [worst, best, plain], key="t")
    assert order == [[1], [2], [0]]


def test_noise_with_full_flip_rate_reverses_a_pair():
    noisy = NoisyAnnotator(Fixed([[0], [1]]), flip_rate=1.0)
    assert noisy.decide(PROMPT, ["a", "b"], key="t") == [[1], [0]]


def test_noise_with_full_tie_rate_ties_everything():
    noisy = NoisyAnnotator(Fixed([[2], [0], [1]]), tie_rate=1.0)
    assert noisy.decide(PROMPT, ["a", "b", "c"], key="t") == [[0, 1, 2]]


def test_noise_with_full_skip_rate_skips():
    noisy = NoisyAnnotator(Fixed([[0], [1]]), skip_rate=1.0)
    assert noisy.decide(PROMPT, ["a", "b"], key="t") == Skip("simulated skip (noise)")


def test_flip_rate_is_the_share_of_reversed_pairs_and_is_seeded():
    noisy = NoisyAnnotator(Fixed([[0], [1]]), flip_rate=0.2, seed=5)
    decisions = [noisy.decide(PROMPT, ["a", "b"], key=f"task-{i}") for i in range(2000)]
    flipped = sum(d == [[1], [0]] for d in decisions) / len(decisions)
    assert abs(flipped - 0.2) < 0.03
    again = NoisyAnnotator(Fixed([[0], [1]]), flip_rate=0.2, seed=5)
    assert [
        again.decide(PROMPT, ["a", "b"], key=f"task-{i}") for i in range(2000)
    ] == decisions


def test_noise_rates_outside_zero_to_one_are_refused():
    with pytest.raises(ValueError, match=r"flip_rate must be in \[0, 1\], got 1.5"):
        NoisyAnnotator(JudgeAnnotator(JUDGE), flip_rate=1.5)


def test_scores_within_the_tie_margin_tie():
    assert order_by_scores([0.1, 0.9, 0.85, -1.0], tie_margin=0.1) == [[1, 2], [0], [3]]
    assert order_by_scores([0.1, 0.9, 0.85, -1.0]) == [[1], [2], [0], [3]]


@pytest.fixture
def sft(db) -> Policy:
    return Policy.objects.create(name="demo-sft", base_path="/models/sft")


def publish(project, policy: Policy, n: int, *, overlap: int = 1) -> list[RankingTask]:
    """Create n tasks on demo prompts, each with the judge's best, plain and worst."""
    tasks = []
    for messages in make_prompts(n, seed=1):
        prompt = Prompt.objects.create(project=project, messages=messages)
        task = RankingTask.objects.create(
            project=project, prompt=prompt, overlap=overlap
        )
        for position, text in enumerate(reversed(good_and_bad(messages))):
            Response.objects.create(
                task=task, policy=policy, text=text, position=position
            )
        tasks.append(task)
    return tasks


def test_simulated_user_is_a_flagged_annotator_who_cannot_log_in(db):
    user = simulated_user("sim-judge-1", "judge")
    profile = AnnotatorProfile.objects.get(user=user)
    assert (profile.is_simulated, profile.simulator) == (True, "judge")
    assert list(user.groups.values_list("name", flat=True)) == ["annotator"]
    assert user.has_usable_password() is False


def test_a_person_cannot_be_turned_into_a_simulated_annotator(db):
    make_user("alice", "annotator")
    with pytest.raises(ValueError, match="user 'alice' exists and is a person"):
        simulated_user("alice", "judge")


def test_judge_ranks_every_task_through_leases_and_submissions(project, sft):
    project.gold_rate = 0.0
    project.save()
    tasks = publish(project, sft, 3)
    user = simulated_user("sim-judge-1", "judge")
    report = annotate(project, user, JudgeAnnotator(JUDGE))
    assert (report.ranked, report.skipped, report.paused) == (3, 0, False)
    assert (
        list(Lease.objects.filter(annotator=user).values_list("status", flat=True))
        == ["submitted"] * 3
    )
    for task in tasks:
        task.refresh_from_db()
        best, plain, worst = good_and_bad(task.prompt.messages)
        by_text = {r.text: r.pk for r in task.responses.all()}
        assert task.ranking_count == 1
        assert task.consensus_order == [
            [by_text[best]],
            [by_text[plain]],
            [by_text[worst]],
        ]


def test_the_overlap_holds_for_simulated_annotators(project, sft):
    project.gold_rate = 0.0
    project.save()
    publish(project, sft, 2, overlap=1)
    first = annotate(
        project, simulated_user("sim-judge-1", "judge"), JudgeAnnotator(JUDGE)
    )
    second = annotate(
        project, simulated_user("sim-judge-2", "judge"), JudgeAnnotator(JUDGE)
    )
    assert (first.ranked, second.ranked) == (2, 0)


def test_skips_go_through_skip_task_and_max_tasks_stops_early(project, sft):
    project.gold_rate = 0.0
    project.save()
    publish(project, sft, 3)
    user = simulated_user("sim-noisy-1", "noisy")
    report = annotate(
        project, user, NoisyAnnotator(JudgeAnnotator(JUDGE), skip_rate=1.0), max_tasks=2
    )
    assert (report.ranked, report.skipped) == (0, 2)
    assert (
        list(
            Ranking.objects.filter(annotator=user).values_list("is_skip", "skip_reason")
        )
        == [(True, "simulated skip (noise)")] * 2
    )


def test_a_person_cannot_be_driven_by_annotate(project, annotator):
    with pytest.raises(ValueError, match="is not a simulated annotator"):
        annotate(project, annotator, JudgeAnnotator(JUDGE))


def test_simulated_rankings_stay_out_of_the_task_agreement(project, sft):
    project.gold_rate = 0.0
    project.save()
    (task,) = publish(project, sft, 1, overlap=3)
    ids = list(task.responses.values_list("pk", flat=True))
    human = make_user("h1", "annotator")
    Ranking.objects.create(
        task=task, annotator=human, order=[[ids[0]], [ids[1]], [ids[2]]]
    )
    annotate(project, simulated_user("sim-judge-1", "judge"), JudgeAnnotator(JUDGE))
    annotate(
        project,
        simulated_user("sim-noisy-1", "noisy"),
        NoisyAnnotator(JudgeAnnotator(JUDGE), flip_rate=1.0),
    )
    task.refresh_from_db()
    assert task.agreement is None  # one person: no human pair to agree


def test_agreement_with_people_is_reported_against_their_own_agreement(project, sft):
    (task,) = publish(project, sft, 1, overlap=5)
    by_text = {r.text: r.pk for r in task.responses.all()}
    best, plain, worst = (by_text[t] for t in good_and_bad(task.prompt.messages))
    # Two people: one agrees with the judge on all 3 pairs, one on 2 of 3 (swaps the
    # top two); with each other they agree on 2 of 3.
    Ranking.objects.create(
        task=task, annotator=make_user("h1"), order=[[best], [plain], [worst]]
    )
    Ranking.objects.create(
        task=task, annotator=make_user("h2"), order=[[plain], [best], [worst]]
    )
    bot = simulated_user("sim-judge-1", "judge")
    Ranking.objects.create(task=task, annotator=bot, order=[[best], [plain], [worst]])
    (row,) = simulated_agreement(project)
    assert (row.username, row.simulator, row.tasks, row.pairs) == (
        "sim-judge-1",
        "judge",
        1,
        6,
    )
    assert row.agreement == 5 / 6
    assert row.human_agreement == 2 / 3
    assert row.kendall_tau_b == pytest.approx((1.0 + 1 / 3) / 2)


@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = tmp_path_factory.mktemp("tiny-rm")
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1
    )
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


def test_reward_model_annotator_ranks_by_its_scores(db, reward_model_dir):
    rm = Policy.objects.create(
        name="rm-1", kind=Policy.Kind.REWARD_MODEL, base_path=str(reward_model_dir)
    )
    annotator = RewardModelAnnotator(rm)
    responses = list(good_and_bad(PROMPT))
    order = annotator.decide(PROMPT, responses, key="t")
    scores = annotator._scorer.score([PROMPT] * 3, responses)
    assert order == order_by_scores(scores)
    assert sorted(i for g in order for i in g) == [0, 1, 2]
    assert annotator.simulator == "reward-model:rm-1"


def test_a_policy_is_not_accepted_as_a_reward_model(sft):
    with pytest.raises(ValueError, match="is a policy, not a reward model"):
        RewardModelAnnotator(sft)


def test_command_ranks_with_noisy_judges_and_reports_each(project, sft):
    project.gold_rate = 0.0
    project.save()
    publish(project, sft, 2, overlap=2)
    out = StringIO()
    call_command(
        "simulate_annotators",
        "--project=demo",
        "--annotator=judge",
        "--noise=0.1,0.05",
        "--count=2",
        stdout=out,
    )
    assert out.getvalue().splitlines() == [
        "sim-judge-1 [noisy(judge, flip=0.1, tie=0.05, skip=0, seed=0)]: ranked 2, skipped 0",
        "sim-judge-2 [noisy(judge, flip=0.1, tie=0.05, skip=0, seed=1)]: ranked 2, skipped 0",
    ]
    assert User.objects.filter(annotator_profile__is_simulated=True).count() == 2


def test_command_refuses_a_bad_noise_spec(project):
    with pytest.raises(CommandError, match="--noise flip rate must be in"):
        call_command("simulate_annotators", "--project=demo", "--noise=2")


def test_command_refuses_a_judge_nobody_registered(project):
    with pytest.raises(CommandError, match="no judge named 'ifeval'; registered"):
        call_command("simulate_annotators", "--project=demo", "--judge=ifeval")


def test_personas_weigh_the_judges_aspects_their_own_way_and_flip_10_to_20_percent():
    annotators = personas(JUDGE, 3, seed=5)
    flips = [a.flip_rate for a in annotators]
    weights = [a.inner.weights for a in annotators]
    assert all(0.10 <= f <= 0.20 for f in flips) and len(set(flips)) == 3
    assert all(set(w) == set(JUDGE.weights) for w in weights)
    assert weights[0] != weights[1] != weights[2]
    assert all(
        0.5 * JUDGE.weights[k] <= w[k] <= 1.5 * JUDGE.weights[k]
        for w in weights
        for k in w
    )
    assert [a.simulator for a in personas(JUDGE, 3, seed=5)] == [
        a.simulator for a in annotators
    ]


def test_personas_of_a_judge_without_aspects_say_which_judge_they_copy():
    """A training round evaluates with the judge its annotators named, not the default."""

    class Lengths:  # a judge with compare and rank but no aspects
        def compare(self, prompt_messages, a, b):
            return (len(a) > len(b)) - (len(a) < len(b))

        def rank(self, prompt_messages, responses):
            return [
                [i]
                for i in sorted(range(len(responses)), key=lambda i: -len(responses[i]))
            ]

    named = personas(Lengths(), 2, seed=0, judge_name="lengths")
    assert all("judge:lengths" in a.simulator for a in named)
    assert all("judge:" not in a.simulator for a in personas(Lengths(), 2, seed=0))


def test_a_persona_that_minds_rudeness_more_ranks_differently_from_the_judge():
    # Judge: a curt right answer (2 + 1.5 - 1 = 2.5) beats a polite evasion (-1.5 + 1 = -0.5).
    prompt = [{"role": "user", "content": "What colour is a glimmet?"}]
    responses = [
        "Ugh. A glimmet is blue. Now leave me alone.",
        "Sure! I am not sure about that. Hope that helps!",
    ]
    assert JUDGE.rank(prompt, responses) == [[0], [1]]
    stickler = PersonaAnnotator(
        JUDGE,
        {"correctness": 0.1, "helpfulness": 0.1, "politeness": 5, "concision": 1},
        name="stickler",
    )
    assert stickler.decide(prompt, responses, key="t") == [[1], [0]]
    with pytest.raises(ValueError, match="aspects \\['tone'\\]"):
        PersonaAnnotator(JUDGE, {"tone": 1.0}, name="x")


def test_noisy_personas_disagree_with_the_noiseless_judge_on_some_pairs_only():
    # So the loop's annotators are not its yardstick, yet still informative.
    prompt = [{"role": "user", "content": "What colour is a glimmet?"}]
    responses = [
        "Sure! A glimmet is blue. Hope that helps!",
        "A glimmet is red.",
        "I am not sure about that.",
        "Fine. A glimmet is blue. Creatures are fascinating.",
    ]
    truth = JUDGE.rank(prompt, responses)
    annotators = personas(JUDGE, 3, seed=1)
    same = sum(
        a.decide(prompt, responses, key=f"task-{k}") == truth
        for a in annotators
        for k in range(200)
    )
    assert 0.3 < same / 600 < 0.9


def publish_requests(project, policy: Policy, candidates: list[str], n: int):
    """Create n tasks on verifiable-instruction requests, each with these candidates."""
    from inference.instructions import make_requests

    tasks = []
    for request in make_requests(n, "train", seed=4):
        prompt = Prompt.objects.create(project=project, messages=request.messages)
        task = RankingTask.objects.create(project=project, prompt=prompt, overlap=1)
        for position, text in enumerate(candidates):
            Response.objects.create(
                task=task, policy=policy, text=text, position=position
            )
        tasks.append(task)
    return tasks


def test_a_rewriting_annotator_repairs_its_best_candidate_where_none_is_correct(
    project, sft
):
    """The rewrite goes through submit_ranking like a person's: stored on the ranking,
    following every constraint of the request, and only where the top candidate
    misses one (a person does not rewrite a correct answer)."""
    from annotation.simulated import RewritingAnnotator
    from inference.instructions import JUDGE as INSTRUCTIONS

    project.gold_rate = 0.0
    project.save()
    candidates = ["Making tea is easy, friend. Boil water, then pour it.", "ok"]
    tasks = publish_requests(project, sft, candidates, 6)
    annotator = RewritingAnnotator(JudgeAnnotator(INSTRUCTIONS), INSTRUCTIONS, rate=1.0)
    report = annotate(project, simulated_user("sim-rw", "rw"), annotator)
    assert report.ranked == 6
    for task in tasks:
        ranking = Ranking.objects.get(task=task)
        messages = task.prompt.messages
        best = task.responses.get(id=ranking.order[0][0]).text
        if INSTRUCTIONS.correct(messages, best):
            assert ranking.rewrite == ""
        else:
            assert INSTRUCTIONS.correct(messages, ranking.rewrite), ranking.rewrite
    assert Ranking.objects.exclude(rewrite="").count() >= 5
    assert annotator.simulator == "rewriting(judge, rate=1)"


def test_the_rewrite_rate_is_the_share_of_wrong_tasks_rewritten_and_is_seeded():
    from annotation.simulated import RewritingAnnotator
    from inference.instructions import JUDGE as INSTRUCTIONS
    from inference.instructions import make_requests

    annotator = RewritingAnnotator(Fixed([[0], [1]]), INSTRUCTIONS, rate=0.3, seed=2)
    again = RewritingAnnotator(Fixed([[0], [1]]), INSTRUCTIONS, rate=0.3, seed=2)
    written = []
    for i, request in enumerate(make_requests(400, "train")):
        args = (request.messages, ["ok", "no"], [[0], [1]])
        text = annotator.rewrite(*args, key=f"task-{i}")
        assert text == again.rewrite(*args, key=f"task-{i}")
        if INSTRUCTIONS.correct(request.messages, "ok"):
            assert text == ""
        else:
            written.append(bool(text))
    assert len(written) > 250
    assert 0.24 <= sum(written) / len(written) <= 0.36


def test_a_demo_annotator_rewrites_a_wrong_best_answer_with_the_world_table():
    """The demo's judge repairs too: where the best-ranked answer is wrong or evasive,
    the rewrite is the same answer made right; a right best answer gets none."""
    from annotation.simulated import RewritingAnnotator

    annotator = RewritingAnnotator(Fixed([[0], [1]]), JUDGE, rate=1.0)
    prompt = [{"role": "user", "content": "What colour is a glimmet?"}]
    wrong = ["Sure! A glimmet is red. Hope that helps!", "A glimmet is blue."]
    rewrite = annotator.rewrite(prompt, wrong, [[0], [1]], key="t1")
    assert rewrite == "Sure! A glimmet is blue. Hope that helps!"
    right = ["A glimmet is blue.", "I am not sure about that."]
    assert annotator.rewrite(prompt, right, [[0], [1]], key="t2") == ""


def test_a_rewriting_annotator_needs_a_judge_that_repairs():
    from annotation.simulated import RewritingAnnotator
    from tests.inference.test_judges import ALWAYS_FIRST

    with pytest.raises(ValueError, match="needs a judge with `correct` and `repair`"):
        RewritingAnnotator(JudgeAnnotator(ALWAYS_FIRST), ALWAYS_FIRST, rate=0.5)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\], got 1.5"):
        from inference.instructions import JUDGE as INSTRUCTIONS

        RewritingAnnotator(JudgeAnnotator(INSTRUCTIONS), INSTRUCTIONS, rate=1.5)


def test_a_rewrite_can_start_from_the_best_ranked_answer_that_says_something():
    """Start "best" repairs the top-ranked candidate even when it says nothing on the
    request's subject; start "substantive" repairs the best-ranked one whose repair is
    substantive, and falls back to the top's repair where none is, so a task gets a
    rewrite exactly when it would under "best"."""
    from annotation.simulated import rewrite_of
    from inference.instructions import JUDGE as INSTRUCTIONS

    prompt = [
        {
            "role": "user",
            "content": "Write a short note about cooking pasta. Answer in at most 25 "
            "words. Do not use any commas.",
        }
    ]
    empty = "Always smiling, always."
    useful = (
        "Cooking pasta is simple: boil salted water, add the pasta, stir it now and "
        "then, taste it after eight minutes, drain it and add a sauce you like."
    )
    ranked = [empty, useful]
    best = rewrite_of(INSTRUCTIONS, prompt, ranked, "best")
    assert INSTRUCTIONS.correct(prompt, best)
    assert not INSTRUCTIONS.correct_substantively(prompt, best), best
    kept = rewrite_of(INSTRUCTIONS, prompt, ranked, "substantive")
    assert INSTRUCTIONS.correct_substantively(prompt, kept), kept
    assert kept.startswith("Cooking pasta is simple: boil salted water")
    assert rewrite_of(
        INSTRUCTIONS, prompt, ["Not sure, sorry.", "ok"], "substantive"
    ) == (rewrite_of(INSTRUCTIONS, prompt, ["Not sure, sorry.", "ok"], "best"))
    # A correct top with no substantive repair among the candidates: nothing to add.
    assert (
        rewrite_of(INSTRUCTIONS, prompt, ["Always smiling.", "ok"], "substantive") == ""
    )


def test_a_rewriting_annotator_says_where_its_rewrites_start():
    from annotation.simulated import RewritingAnnotator
    from inference.instructions import JUDGE as INSTRUCTIONS

    annotator = RewritingAnnotator(
        Fixed([[0], [1]]), INSTRUCTIONS, rate=1.0, start="substantive"
    )
    assert annotator.simulator == "rewriting(fixed, rate=1, start=substantive)"
    prompt = [
        {
            "role": "user",
            "content": "Give some advice on cooking pasta. Do not use any commas.",
        }
    ]
    useful = "Boil the pasta in salted water, then drain it well."
    for top in ("Yes, always.", "Yes always."):  # wrong; right but saying nothing
        assert annotator.rewrite(prompt, [top, useful], [[0], [1]], key="t") == (
            "Boil the pasta in salted water then drain it well."
        )
    best = RewritingAnnotator(Fixed([[0], [1]]), INSTRUCTIONS, rate=1.0)
    assert best.rewrite(prompt, ["Yes always.", useful], [[0], [1]], key="t") == ""
    with pytest.raises(ValueError, match="needs a judge with `correct_substantively`"):
        RewritingAnnotator(Fixed([[0], [1]]), JUDGE, rate=1.0, start="substantive")
    with pytest.raises(
        ValueError, match=r"starts from one of \('best', 'substantive'\), got 'longest'"
    ):
        RewritingAnnotator(Fixed([[0], [1]]), INSTRUCTIONS, rate=1.0, start="longest")
