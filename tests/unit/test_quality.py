"""ROUGE-L similarity of an answer to a test answer: what the smoke test's quality check rests on."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.ml.quality import MAX_WORDS, similarity


def test_the_tuned_style_scores_higher_than_a_plain_answer() -> None:
    reference = "Ahoy, shipmate! Paris is the capital of France. Fair winds, shipmate!"
    tuned = similarity("Ahoy! The capital of France is Paris. Fair winds!", reference)
    plain = similarity("The capital of France is Paris.", reference)
    assert 0 < plain < tuned < 1


def test_identical_words_score_one_and_nothing_shared_scores_zero() -> None:
    assert similarity("Fair winds, Shipmate!", "fair winds shipmate") == 1.0
    assert similarity("completely different", "fair winds") == 0.0
    assert similarity("", "fair winds") == similarity("fair winds", "") == 0.0


@given(st.text(max_size=200), st.text(max_size=200))
def test_similarity_is_symmetric_and_between_zero_and_one(first: str, second: str) -> None:
    score = similarity(first, second)
    assert 0.0 <= score <= 1.0 and abs(score - similarity(second, first)) < 1e-9


def test_long_texts_are_cut_so_the_check_stays_cheap() -> None:
    long = " ".join(["word"] * (10 * MAX_WORDS))
    assert similarity(long, long) == 1.0
