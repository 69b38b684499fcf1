"""Word n-gram ARPA writer (sprune.decode.arpa): interpolated Kneser-Ney against a hand
computation, normalisation, and KenLM (flashlight-text's) reading it back exactly."""
from __future__ import annotations

import math

import pytest

from sprune.decode.arpa import read_sentences, train_kneser_ney
from sprune.errors import UserError

CORPUS = [["a", "b"], ["a", "a", "b"]]


def test_bigram_matches_a_hand_computation():
    m = train_kneser_ney(CORPUS, order=2)
    # bigram counts (raw, highest order): <s> a 2, a b 2, b </s> 2, a a 1 -> n1 = 1, n2 = 3
    d2 = 1 / (1 + 2 * 3)
    # unigram continuation counts: a {<s>, a} 2, b {a} 1, </s> {b} 1 -> n1 = 2, n2 = 1
    d1 = 2 / (2 + 2 * 1)
    assert m.discounts == pytest.approx([d1, d2])
    # the uniform part spreads over a, b, </s>, <unk> (<s> is never predicted)
    assert sorted(m.vocab) == sorted(["a", "b", "</s>", "<unk>"])
    vocab = 4
    p1 = {w: (max(c - d1, 0) + d1 * 3 / vocab) / 4 for w, c in
          {"a": 2, "b": 1, "</s>": 1, "<unk>": 0}.items()}
    for w, p in p1.items():
        assert m.prob(w) == pytest.approx(p)
    # context a: a b 2, a a 1 -> A = 3, T = 2
    assert m.prob("b", ["a"]) == pytest.approx((2 - d2) / 3 + d2 * 2 / 3 * p1["b"])
    assert m.prob("</s>", ["a"]) == pytest.approx(d2 * 2 / 3 * p1["</s>"])
    assert m.backoff(("a",)) == pytest.approx(d2 * 2 / 3)
    # an unseen context backs off to the unigram entirely
    assert m.prob("a", ["<unk>"]) == pytest.approx(p1["a"])
    assert m.prob("a", ["b"]) == pytest.approx(d2 * 1 / 2 * p1["a"])   # b: b </s> 2
    assert m.prob("never-seen") == pytest.approx(p1["<unk>"])


@pytest.mark.parametrize("order", [2, 3, 4])
def test_every_context_sums_to_one(order):
    sents = [s.split() for s in ["a b c", "a b", "b c a", "c c b a", "a a b c"]]
    m = train_kneser_ney(sents, order)
    for ctx in [(), ("<s>",), ("a",), ("a", "b"), ("c", "c"), ("b", "c"), ("x", "y", "z")]:
        assert sum(m.prob(w, ctx) for w in m.vocab) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("order", [2, 3])
def test_kenlm_reads_the_arpa_and_scores_like_the_model(tmp_path, order):
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import create_word_dict

    sents = [s.split() for s in ["my card was declined", "my card is lost", "send my card",
                                 "was it lost", "lost my card again"]]
    m = train_kneser_ney(sents, order)
    path = tmp_path / "lm.arpa"
    m.write_arpa(path)
    text = path.read_text()
    assert text.startswith("\\data\\\n") and text.rstrip().endswith("\\end\\")
    words = create_word_dict({w: [[w]] for w in m.vocab})
    lm = KenLM(str(path), words)
    for sentence in [["my", "card", "was", "lost"], ["card", "my"], ["send", "zebra", "card"]]:
        state, total = lm.start(False), 0.0
        for w in sentence:
            state, score = lm.score(state, words.get_index(w if w in m.vocab else "<unk>"))
            total += score
        total += lm.finish(state)[1]
        assert total == pytest.approx(m.sentence_log10(sentence), abs=1e-4)


def test_bad_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="order of at least 2"):
        train_kneser_ney(CORPUS, order=1)
    with pytest.raises(UserError, match="no words"):
        train_kneser_ney([[], []], order=2)
    with pytest.raises(UserError, match="reserved word '</s>'"):
        train_kneser_ney([["a", "</s>"]], order=2)
    with pytest.raises(UserError, match="does not exist"):
        read_sentences(tmp_path / "missing.txt")


def test_read_sentences_normalises_and_drops_kaldi_ids(tmp_path):
    path = tmp_path / "text"
    path.write_text("u1 Hello, World!\nu2 Don't stop\nu3\n", encoding="utf-8")
    assert read_sentences(path, kaldi=True) == [["hello", "world"], ["don't", "stop"], []]
    assert math.isclose(train_kneser_ney(read_sentences(path, kaldi=True), 2).prob("hello"),
                        train_kneser_ney([["hello", "world"], ["don't", "stop"]], 2).prob("hello"))
