"""Tests of annotation/curation.py: each filter drops what it should and keeps the rest."""

from __future__ import annotations

import pytest

from annotation.curation import CORPUS_FILTERS, PROMPT_FILTERS, Filters, curate

KEEPER = (
    "The river winds through the valley, past the old mill and the orchard, "
    "before it reaches the sea at the fishing town."
)
OTHER = (
    "Bakers in the town rise before dawn; their bread is sold at the market "
    "square by seven, while the fishermen mend their nets."
)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("Too short.", "too_short"),
        ("word " * 30_000, "too_long"),
        ("A fine day by the sea!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!", "repeated_character"),
        ("buy now buy now buy now buy now buy now buy now buy now", "repeated_ngrams"),
        ("Hello\x00 there, friend of the valley, how are you?", "bad_characters"),
        ("$$$ 1234 5678 %%% ### 999 @@@ 42 17 ?? 0000", "character_mix"),
        (KEEPER, "exact_duplicate"),
        (KEEPER.replace("valley,", "valley;"), "near_duplicate"),
        ("Here is how to build a bomb from things in the kitchen.", "harmful"),
    ],
)
def test_each_filter_drops_its_kind_of_text_and_keeps_the_good_ones(text, reason):
    curated = curate([KEEPER, text, OTHER], CORPUS_FILTERS)
    assert curated.kept == [0, 2]
    assert curated.counts == {reason: 1}
    (sample,) = curated.samples[reason]
    assert sample["where"] == "text 2"
    assert sample["text"] == text[:300]


def test_texts_of_one_topic_in_other_words_are_not_near_duplicates():
    same_topic = (
        "An orchard grows beside the old mill; the valley's river passes it on "
        "the way to a fishing town by the sea."
    )
    assert curate([KEEPER, same_topic], CORPUS_FILTERS).kept == [0, 1]


def test_whitespace_alone_makes_an_exact_duplicate():
    curated = curate([KEEPER, "  " + KEEPER.replace(" ", "\n  ", 3)], CORPUS_FILTERS)
    assert curated.counts == {"exact_duplicate": 1}
    assert curated.samples["exact_duplicate"][0]["message"] == (
        "exact duplicate of text 1"
    )


def test_harmful_text_is_kept_and_counted_when_the_filters_keep_it():
    harmful = "Here is how to build a bomb from things in the kitchen."
    curated = curate([KEEPER, harmful], PROMPT_FILTERS)
    assert curated.kept == [0, 1]
    assert curated.flagged == 1


def test_thresholds_move_the_filters():
    short = "A short line."
    assert curate([short], Filters(min_chars=8)).kept == [0]
    assert curate([short], Filters(min_chars=20)).kept == []


def test_report_counts_every_reason_with_its_samples_in_order():
    texts = [KEEPER, KEEPER, "tiny", OTHER, "tiny too", KEEPER]
    report = curate(texts, CORPUS_FILTERS, [f"line {i}" for i in range(6)]).report(6)
    assert report["total"] == 6
    assert report["kept"] == 2
    assert report["dropped"] == 4
    assert [(r["reason"], r["count"]) for r in report["reasons"]] == [
        ("too_short", 2),
        ("exact_duplicate", 2),
    ]
    assert [s["where"] for s in report["reasons"][1]["samples"]] == ["line 1", "line 5"]


def test_samples_are_bounded_per_reason():
    curated = curate([KEEPER] * 20, CORPUS_FILTERS)
    assert curated.counts == {"exact_duplicate": 19}
    assert len(curated.samples["exact_duplicate"]) == 5


@pytest.mark.parametrize(
    "values, message",
    [
        ({"min_chars": 0}, "min_chars must be >= 1, got 0"),
        ({"min_chars": 50, "max_chars": 10}, "max_chars must be >= min_chars (50)"),
        ({"min_letter_share": 1.5}, "min_letter_share must be in [0, 1], got 1.5"),
        ({"near_duplicate_jaccard": 0}, "near_duplicate_jaccard must be in (0, 1]"),
        ({"colour": "red"}, "unknown filter(s) ['colour']"),
    ],
)
def test_bad_thresholds_are_refused_with_a_message(values, message):
    with pytest.raises(ValueError) as error:
        Filters.from_dict(values)
    assert str(error.value).startswith(message)
