"""How alike an answer is to a reference answer: ROUGE-L F1 over lower-case words.

ROUGE-L rewards the longest run of words the two share in order, so it sees style and content a
fine-tuned model learnt ("Ahoy ... Fair winds") without a model or a tokenizer; 0 shares nothing,
1 is the same words in the same order.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")
# Answers and references are cut to this many words: the check stays cheap (quadratic in length).
MAX_WORDS = 300


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())[:MAX_WORDS]


def similarity(answer: str, reference: str) -> float:
    """ROUGE-L F1 of `answer` against `reference`, between 0 and 1."""
    candidate, target = words(answer), words(reference)
    if not candidate or not target:
        return 0.0
    common = _longest_common_subsequence(candidate, target)
    if not common:
        return 0.0
    precision, recall = common / len(candidate), common / len(target)
    return 2 * precision * recall / (precision + recall)


def _longest_common_subsequence(first: list[str], second: list[str]) -> int:
    previous = [0] * (len(second) + 1)
    for word in first:
        current = [0]
        for index, other in enumerate(second):
            current.append(previous[index] + 1 if word == other else max(previous[index + 1], current[index]))
        previous = current
    return previous[-1]
