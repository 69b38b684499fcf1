"""Error rates on hand-made pairs, equal to jiwer's; accuracy; empty sets are user errors."""
from __future__ import annotations

import math

import jiwer
import pytest

from sprune import metrics
from sprune.errors import UserError

REFS = ["the cat sat on the mat", "hello world", "a b c d", "je voudrais payer"]
HYPS = ["the cat sat on mat", "hello there world", "a x c d e", "je voudrai payer ma facture"]


def test_wer_on_hand_made_pairs():
    # deletions: 1 ("the"); insertion 1 ("there"); 1 sub + 1 ins; 1 sub + 2 ins
    errors = metrics.word_errors(REFS, HYPS)
    assert [u.edits for u in errors.utterances] == [1, 1, 2, 3]
    assert [u.ref_units for u in errors.utterances] == [6, 2, 4, 3]
    assert errors.edits == 7 and errors.ref_units == 15
    assert metrics.wer(REFS, HYPS) == pytest.approx(7 / 15)
    assert [u.rate for u in errors.utterances] == pytest.approx([1 / 6, 1 / 2, 2 / 4, 3 / 3])


def test_cer_on_hand_made_pairs():
    # "abc d" vs "abd": c deleted, space deleted -> 2 edits over 5 characters (spaces count)
    assert metrics.cer(["abc d"], ["abd"]) == pytest.approx(2 / 5)
    # whitespace runs collapse and ends are stripped
    assert metrics.cer(["  ab   cd "], ["ab cd"]) == 0.0
    assert metrics.cer(["kitten"], ["sitting"]) == pytest.approx(3 / 6)


def test_error_rates_equal_jiwer():
    assert metrics.wer(REFS, HYPS) == pytest.approx(jiwer.wer(REFS, HYPS))
    assert metrics.cer(REFS, HYPS) == pytest.approx(jiwer.cer(REFS, HYPS))
    for ref, hyp in zip(REFS, HYPS):
        assert metrics.wer([ref], [hyp]) == pytest.approx(jiwer.wer(ref, hyp))
        assert metrics.cer([ref], [hyp]) == pytest.approx(jiwer.cer(ref, hyp))


def test_per_counts_phones_not_characters():
    refs = [["h", "ə", "l", "oʊ"], ["t͡ʃ", "a"]]
    hyps = [["h", "ɛ", "l", "o", "ʊ"], ["t͡ʃ", "a"]]
    # oʊ -> o ʊ is one substitution plus one insertion; ə -> ɛ one substitution
    assert metrics.per(refs, hyps) == pytest.approx(3 / 6)


def test_per_utterance_rate_of_empty_reference():
    errors = metrics.unit_errors([[], ["a"]], [["x"], ["a"]])
    assert errors.utterances[0].rate == math.inf and errors.utterances[1].rate == 0.0
    assert errors.rate == 1.0
    assert metrics.unit_errors([[], ["a"]], [[], ["a"]]).utterances[0].rate == 0.0


def test_accuracy():
    assert metrics.accuracy(["a", "b", "c", "d"], ["a", "x", "c", "d"]) == 0.75


@pytest.mark.parametrize("fn", [metrics.wer, metrics.cer, metrics.per, metrics.accuracy])
def test_empty_decoding_set_is_a_user_error(fn):
    with pytest.raises(UserError, match="decoding set is empty"):
        fn([], [])


def test_mismatched_counts_and_empty_references_are_user_errors():
    with pytest.raises(UserError, match="2 references but 1 hypotheses"):
        metrics.wer(["a", "b"], ["a"])
    with pytest.raises(UserError, match="every reference is empty"):
        metrics.wer(["", "  "], ["a", ""])
