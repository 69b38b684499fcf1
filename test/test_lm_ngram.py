"""sprune.lm.ngram: the interpolated Kneser-Ney token bigram used for LODR."""
from __future__ import annotations

import math

import pytest
import torch

from sprune.errors import UserError
from sprune.lm.ngram import TokenNGram, train_from_text
from sprune.lm.vocab import LMVocab

# V = 6: 0 <blank>, 1 <unk>, 2..4 pieces, 5 <sos/eos>.
V, E = 6, 5
TOY = [[2, 3], [2, 3, 4], [3, 4]]
# Bigrams (E = <sos/eos>): (E,2) x2, (2,3) x2, (3,E) x1, (3,4) x2, (4,E) x2, (E,3) x1
# -> n1 = 2, n2 = 4, D2 = 2 / (2 + 2*4) = 1/5.
# Continuation counts N1+(. w): w=2 {E} 1, w=3 {2,E} 2, w=4 {3} 1, w=E {3,4} 2; total 6,
# 4 types -> n1 = 2, n2 = 2, D1 = 2 / (2 + 2*2) = 1/3; uniform weight (1/3)*4/6 = 2/9 over
# the 5 real ids -> 2/45 each.
P1 = {1: 2 / 45,
      2: (1 - 1 / 3) / 6 + 2 / 45,   # 7/45
      3: (2 - 1 / 3) / 6 + 2 / 45,   # 29/90
      4: (1 - 1 / 3) / 6 + 2 / 45,   # 7/45
      5: (2 - 1 / 3) / 6 + 2 / 45}   # 29/90
# Context 3: c(3) = 3, two distinct followers -> backoff weight (1/5)*2/3 = 2/15.
P_AFTER_3 = {4: (2 - 1 / 5) / 3 + 2 / 15 * P1[4],   # 0.620741
             5: (1 - 1 / 5) / 3 + 2 / 15 * P1[5],   # 0.309630
             2: 2 / 15 * P1[2], 3: 2 / 15 * P1[3], 1: 2 / 15 * P1[1]}


@pytest.fixture(scope="module")
def toy() -> TokenNGram:
    return TokenNGram.train(TOY, V)


@pytest.fixture(scope="module")
def vocab() -> LMVocab:
    return LMVocab.train(["the cat sat on the mat", "a dog ate the hat", "cats and dogs",
                          "the mat is flat and the hat is black"] * 5, vocab_size=30)


def test_hand_computed_kneser_ney(toy):
    assert toy.discounts == pytest.approx([1 / 3, 1 / 5])
    assert sum(P1.values()) == pytest.approx(1) and sum(P_AFTER_3.values()) == pytest.approx(1)
    for w, p in P_AFTER_3.items():
        assert math.exp(toy.log_probs[3, w]) == pytest.approx(p, rel=1e-6)
    assert math.exp(toy.log_probs[E, 2]) == pytest.approx((2 - 0.2) / 3 + 2 / 15 * P1[2],
                                                           rel=1e-6)
    assert toy.stats == {"sentences": 3, "tokens": 10, "bigram_types": 6}


def test_rows_sum_to_one_and_blank_is_impossible(toy, vocab):
    big = train_from_text(["the cat sat on the mat", "the hat is black", "dogs and cats"],
                          vocab)
    for model in (toy, big):
        assert torch.allclose(model.log_probs[:, 1:].double().exp().sum(1),
                              torch.ones(model.vocab_size, dtype=torch.float64), atol=1e-5)
        assert torch.isneginf(model.log_probs[:, 0]).all()
        assert torch.isfinite(model.log_probs[:, 1:]).all()


def test_unseen_bigram_gets_the_backoff_mass(toy):
    # (3, 2) was never seen: its probability is context 3's backoff weight times P1(2).
    assert math.exp(toy.log_probs[3, 2]) == pytest.approx(2 / 15 * 7 / 45, rel=1e-6)
    assert math.exp(toy.log_backoff[3]) == pytest.approx(2 / 15, rel=1e-6)
    # A context never seen (<unk>, id 1) backs off entirely to the unigram level.
    expected = torch.tensor([0.0] + [P1[w] for w in range(1, V)]).log()
    assert torch.allclose(toy.log_probs[1], expected.float())
    assert torch.allclose(toy.unigram, expected.float())


def test_order_one_is_the_discounted_unigram(toy):
    uni = TokenNGram.train(TOY, V, order=1)
    # Raw counts of predicted tokens: 2 x2, 3 x3, 4 x2, E x3 (N = 10); n1 = 0, so D = 0.75;
    # uniform weight 0.75 * 4 / 10 = 0.3 over 5 ids -> 0.06 each.
    expected = [0.0, 0.06, 1.25 / 10 + 0.06, 2.25 / 10 + 0.06, 1.25 / 10 + 0.06,
                2.25 / 10 + 0.06]
    assert uni.order == 1 and uni.discounts == [0.75]
    assert torch.allclose(uni.log_probs.exp(), torch.tensor(expected))
    rows = uni.next_log_probs(torch.tensor([E, 2, 3]))
    assert rows.shape == (3, V) and torch.equal(rows[0], rows[2])
    assert uni.sentence_log_prob([2, 3]) == pytest.approx(math.log(0.185 * 0.285 * 0.285))


def test_next_log_probs_sentence_log_prob_and_perplexity(toy):
    rows = toy.next_log_probs(torch.tensor([3, E, 3]))
    assert rows.shape == (3, V) and torch.equal(rows[0], toy.log_probs[3])
    assert torch.equal(rows[1], toy.log_probs[E])
    logp = toy.sentence_log_prob([3, 4])
    assert logp == pytest.approx(float(toy.log_probs[E, 3] + toy.log_probs[3, 4]
                                       + toy.log_probs[4, E]), rel=1e-6)
    assert toy.perplexity([[3, 4], []]) == pytest.approx(
        math.exp(-(logp + float(toy.log_probs[E, E])) / 4), rel=1e-6)


@pytest.mark.parametrize("order", [1, 2])
def test_save_load_round_trip(order, tmp_path):
    model = TokenNGram.train(TOY, V, order=order)
    model.save(tmp_path / "lm.safetensors")
    back = TokenNGram.load(tmp_path / "lm.safetensors")
    assert back.order == order and back.vocab_size == V
    for name in ("log_probs", "unigram", "log_backoff", "bigrams"):
        if order == 2:
            assert torch.equal(getattr(back, name), getattr(model, name)), name
        else:
            assert getattr(back, name) is None or name == "log_probs"
    assert torch.equal(back.log_probs, model.log_probs)
    assert back.discounts == model.discounts and back.stats == model.stats
    assert [p.name for p in tmp_path.iterdir()] == ["lm.safetensors"]  # no temp file left


def parse_arpa(text: str) -> tuple[dict, dict, dict]:
    """log10 unigram probs, unigram backoffs and bigram probs of an ARPA file."""
    uni, bow, bi, section = {}, {}, {}, None
    for line in text.splitlines():
        if line.startswith("\\"):
            section = line
        elif line and section == "\\1-grams:":
            fields = line.split("\t")
            uni[fields[1]] = float(fields[0])
            bow[fields[1]] = float(fields[2]) if len(fields) > 2 else 0.0
        elif line and section == "\\2-grams:":
            logp, words = line.split("\t")
            bi[tuple(words.split(" "))] = float(logp)
    return uni, bow, bi


@pytest.mark.parametrize("use_vocab", [False, True])
def test_arpa_backoff_reproduces_the_table(use_vocab, vocab, tmp_path):
    if use_vocab:
        model = train_from_text(["the cat sat", "the hat", "a dog ate the cat"], vocab)
        words = vocab.token_list
    else:
        model = TokenNGram.train(TOY, V)
        words = [str(i) for i in range(V)]
    words[1] = "<unk>"
    model.write_arpa(tmp_path / "lm.arpa", vocab if use_vocab else None)
    text = (tmp_path / "lm.arpa").read_text()
    uni, bow, bi = parse_arpa(text)
    n = model.vocab_size
    assert f"ngram 1={n}\nngram 2={len(bi)}\n" in text and text.endswith("\\end\\\n")
    assert len(bi) == model.stats["bigram_types"] and uni["<s>"] == -99.0
    for v in range(1, n):
        context = "<s>" if v == n - 1 else words[v]
        for w in range(1, n):
            word = "</s>" if w == n - 1 else words[w]
            log10p = bi.get((context, word), bow[context] + uni[word])
            assert log10p * math.log(10) == pytest.approx(float(model.log_probs[v, w]),
                                                          abs=1e-5)


def test_order_one_arpa(tmp_path):
    uni = TokenNGram.train(TOY, V, order=1)
    uni.write_arpa(tmp_path / "u.arpa")
    probs, _, bigrams = parse_arpa((tmp_path / "u.arpa").read_text())
    assert not bigrams
    assert 10 ** probs["</s>"] == pytest.approx(0.285, rel=1e-6)
    assert 10 ** probs["3"] == pytest.approx(0.285, rel=1e-6)


def test_errors(toy, vocab, tmp_path):
    with pytest.raises(UserError, match="order 3 is not supported; use order 1 or 2"):
        TokenNGram.train(TOY, V, order=3)
    with pytest.raises(UserError, match="no tokens"):
        TokenNGram.train([], V)
    with pytest.raises(UserError, match="train.txt has no tokens"):
        train_from_text(["", "  "], vocab, where="train.txt")
    with pytest.raises(UserError, match="token id 5"):
        TokenNGram.train([[2, 5]], V)
    with pytest.raises(UserError, match="token id 0"):
        TokenNGram.train([[0, 2]], V)
    with pytest.raises(UserError, match="missing.safetensors does not exist"):
        TokenNGram.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(UserError, match="bad.safetensors is not a readable"):
        TokenNGram.load(bad)
    saved = tmp_path / "toy.safetensors"
    toy.save(saved)
    with pytest.raises(UserError, match=r"has 30 tokens but the LM in .*toy.safetensors was "
                                        r"trained with 6"):
        TokenNGram.load(saved).check_vocab(vocab, saved)
    with pytest.raises(UserError, match="has 30 tokens"):
        TokenNGram.load(saved).write_arpa(tmp_path / "x.arpa", vocab)
    assert not (tmp_path / "x.arpa").exists()
