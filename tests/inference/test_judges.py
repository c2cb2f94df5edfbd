"""The judge registry: names to importable judges, looked up with errors that name them."""

import pytest

from inference import judges


class AlwaysFirst:
    """A judge that prefers the first response it is shown."""

    def compare(self, prompt_messages: list[dict], a: str, b: str) -> float:
        return 1.0

    def rank(
        self, prompt_messages: list[dict], responses: list[str]
    ) -> list[list[int]]:
        return [[i] for i in range(len(responses))]


ALWAYS_FIRST = AlwaysFirst()
NOT_A_JUDGE = object()
PATH = f"{__name__}:ALWAYS_FIRST"


@pytest.fixture
def registry(monkeypatch) -> dict[str, str]:
    """An empty registry for the test, put back afterwards."""
    fresh: dict[str, str] = {}
    monkeypatch.setattr(judges, "_JUDGES", fresh)
    monkeypatch.setattr(judges, "_NAMED_ONLY", set())
    return fresh


def test_a_registered_judge_is_found_by_name_and_loaded_by_path(registry):
    judges.register_judge("first", PATH)

    assert judges.judge_path("first") == PATH
    assert judges.get_judge("first") is ALWAYS_FIRST
    assert judges.load_judge(PATH) is ALWAYS_FIRST


def test_an_unknown_name_is_refused_naming_the_registered_judges(registry):
    judges.register_judge("first", PATH)

    with pytest.raises(ValueError) as error:
        judges.get_judge("ifeval")
    assert str(error.value).startswith(
        "no judge named 'ifeval'; registered judges: ['first']"
    )


def test_registering_again_is_harmless_but_a_taken_name_keeps_its_path(registry):
    judges.register_judge("first", PATH)
    judges.register_judge("first", PATH)

    with pytest.raises(ValueError, match="already registered"):
        judges.register_judge("first", "elsewhere:JUDGE")
    assert judges.registered_judges() == {"first": PATH}


@pytest.mark.parametrize("path", ["no_attribute", ":JUDGE", "module:"])
def test_a_path_without_module_and_attribute_is_refused(registry, path):
    with pytest.raises(ValueError, match="judge path must be 'module:attribute'"):
        judges.register_judge("bad", path)


def test_an_object_without_compare_and_rank_is_not_a_judge():
    with pytest.raises(ValueError, match=r"lacks \['compare', 'rank'\]"):
        judges.load_judge(f"{__name__}:NOT_A_JUDGE")


@pytest.mark.parametrize(
    ("names", "default"), [([], None), (["first"], "first"), (["first", "b"], None)]
)
def test_the_default_judge_is_the_only_registered_one(registry, names, default):
    for name in names:
        judges.register_judge(name, PATH)

    assert judges.default_judge_name() == default


def test_a_named_only_judge_is_never_the_default_but_is_found_by_name(registry):
    judges.register_judge("family", PATH, named_only=True)
    assert judges.default_judge_name() is None

    judges.register_judge("app", PATH)

    assert judges.default_judge_name() == "app"
    assert judges.get_judge("family") is ALWAYS_FIRST


def test_the_installed_apps_register_the_instructions_judge_by_name_only():
    from inference.instructions import JUDGE

    assert judges.get_judge("instructions") is JUDGE
    assert "instructions" in judges._NAMED_ONLY


def test_asking_for_the_default_judge_among_several_is_refused(registry):
    judges.register_judge("first", PATH)
    judges.register_judge("second", PATH)

    with pytest.raises(ValueError) as error:
        judges.get_judge()
    assert str(error.value) == (
        "name a judge: 2 are registered (['first', 'second']), so there is no default one"
    )


def test_win_probability_maps_a_preference_in_minus_one_to_one_onto_zero_to_one():
    probability = judges.win_probability(ALWAYS_FIRST)

    assert probability([], "a", "b") == 1.0


def test_a_judge_offers_a_reward_only_with_a_reward_method():
    from demo.world import JUDGE

    assert judges.judge_offers(JUDGE, "reward")
    assert not judges.judge_offers(ALWAYS_FIRST, "reward")
    with pytest.raises(ValueError, match="'repair' or 'reward', got 'score'"):
        judges.judge_offers(JUDGE, "score")
