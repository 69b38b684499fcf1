"""CTC decoding on torchaudio's flashlight decoder (sprune.decode.ctc_flashlight): the same
best labelling as the Python prefix beam search (the reference) with a wide beam and no LM,
lexicon search, KenLM n-gram and sprune-LM fusion changing the decision, the neural LM's
word scores, and the one-line errors of bad lexicons and n-gram files."""
from __future__ import annotations

import math

import pytest
import torch

from sprune.data.tokenizer import CharTokenizer
from sprune.decode.arpa import train_kneser_ney
from sprune.decode.ctc_flashlight import FlashlightCTCDecoder, SearchOptions, load_kenlm
from sprune.decode.ctc_reference import prefix_beam_search
from sprune.decode.lexicon import build_lexicon, read_lexicon, write_lexicon
from sprune.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOK = CharTokenizer.build(["bad bed bid dab"])      # <blank> | a b d e i


def emissions(rows: list[dict[str, float]]) -> torch.Tensor:
    """Per frame: probabilities of some units (the rest share what is left, blank the most)
    -> log-probs [1, T, V]."""
    out = torch.full((len(rows), TOK.vocab_size), 1e-4)
    for t, row in enumerate(rows):
        for unit, p in row.items():
            out[t, TOK.index[unit]] = p
        rest = 1.0 - sum(row.values()) - 1e-4 * (TOK.vocab_size - len(row) - 1)
        if "<blank>" not in row:
            out[t, 0] = rest
    return (out / out.sum(-1, keepdim=True)).log()[None]


def ambiguous_word() -> torch.Tensor:
    """'b', then 'a' or 'e' nearly tied ('a' ahead), then 'd': acoustically 'bad' over 'bed'."""
    return emissions([{"b": 0.9}, {"<blank>": 0.9}, {"a": 0.5, "e": 0.45},
                      {"<blank>": 0.9}, {"d": 0.9}])


@pytest.mark.parametrize("seed", range(24))
def test_same_best_labelling_as_the_prefix_search_with_a_wide_beam(seed):
    g = torch.Generator().manual_seed(seed)
    log_probs = (torch.randn(12, TOK.vocab_size, generator=g) * 4).log_softmax(-1)
    reference = prefix_beam_search(log_probs.double(), beam=500)
    decoder = FlashlightCTCDecoder(TOK, SearchOptions(beam=500, beam_threshold=1e9))
    result, = decoder.decode(log_probs[None])
    assert result.ids == reference[0].labels
    # the merged score is the labelling's log-likelihood, up to alignments flashlight drops
    assert result.score == pytest.approx(reference[0].log_likelihood, abs=0.05)


def test_beam_one_is_greedy_on_a_peaked_utterance():
    lp = emissions([{"b": 0.9}, {"b": 0.9}, {"a": 0.9}, {"|": 0.9}, {"d": 0.9}])
    assert FlashlightCTCDecoder(TOK, SearchOptions(beam=1)).texts(lp) == ["ba d"]


def lexicon_file(tmp_path, words=("bad", "bed", "bid")):
    lexicon, skipped = build_lexicon([list(words)], TOK)
    assert not skipped
    path = tmp_path / "lexicon.txt"
    write_lexicon(lexicon, path)
    return path


def test_lexicon_search_spells_only_lexicon_words(tmp_path):
    path = lexicon_file(tmp_path, ("bed", "bid"))
    assert path.read_text().splitlines() == ["bed b e d", "bid b i d"]
    lexicon = read_lexicon(path, TOK)
    lp = ambiguous_word()
    assert FlashlightCTCDecoder(TOK, SearchOptions(beam=8)).texts(lp) == ["bad"]
    assert FlashlightCTCDecoder(TOK, SearchOptions(beam=8), lexicon).texts(lp) == ["bed"]


def test_kenlm_ngram_and_word_score_change_the_decision(tmp_path):
    lexicon = read_lexicon(lexicon_file(tmp_path), TOK)
    arpa = tmp_path / "lm.arpa"
    train_kneser_ney([["bed"]] * 20 + [["bad"]], order=2).write_arpa(arpa)
    lp = ambiguous_word()
    plain = FlashlightCTCDecoder(TOK, SearchOptions(beam=8), lexicon)
    assert plain.texts(lp) == ["bad"]
    fused = FlashlightCTCDecoder(TOK, SearchOptions(beam=8, lm_weight=1.0), lexicon, arpa)
    assert fused.texts(lp) == ["bed"]
    # a strongly negative word score makes fewer words cheaper than two
    two = emissions([{"b": 0.9}, {"a": 0.9}, {"d": 0.9}, {"|": 0.6}, {"b": 0.9}, {"e": 0.9},
                     {"d": 0.9}])
    assert plain.texts(two) == ["bad bed"]
    costly = FlashlightCTCDecoder(TOK, SearchOptions(beam=8, word_score=-30.0), lexicon)
    assert len(costly.texts(two)[0].split()) < 2


def test_unit_ngram_changes_a_lexicon_free_decision(tmp_path):
    """Lexicon-free search with a character n-gram: the spelling the LM has seen wins a
    near-tie, and the weight scales its effect (0: the acoustic choice)."""
    arpa = tmp_path / "char.arpa"
    train_kneser_ney([TOK.tokens("bed")] * 20 + [TOK.tokens("bid")], order=3).write_arpa(arpa)
    lp = ambiguous_word()
    assert FlashlightCTCDecoder(TOK, SearchOptions(beam=8)).texts(lp) == ["bad"]
    off = FlashlightCTCDecoder(TOK, SearchOptions(beam=8, lm_weight=0.0), None, arpa)
    assert off.texts(lp) == ["bad"]
    fused = FlashlightCTCDecoder(TOK, SearchOptions(beam=8, lm_weight=1.0), None, arpa)
    assert fused.texts(lp) == ["bed"]
    # beam_tokens: only the most likely units of a frame are tried ('e' is second there)
    first_only = SearchOptions(beam=8, lm_weight=1.0, beam_tokens=1)
    assert FlashlightCTCDecoder(TOK, first_only, None, arpa).texts(lp) == ["bad"]
    two = SearchOptions(beam=8, lm_weight=1.0, beam_tokens=2)
    assert FlashlightCTCDecoder(TOK, two, None, arpa).texts(lp) == ["bed"]
    with pytest.raises(UserError, match="--beam-tokens must be at least 1"):
        FlashlightCTCDecoder(TOK, SearchOptions(beam_tokens=0))


@pytest.fixture(scope="module")
def tiny_lm():
    from sprune.lm.config import LMConfig
    from sprune.lm.model import TransformerLM
    from sprune.lm.vocab import LMVocab

    vocab = LMVocab.train(["bad bed bid dab", "bed bed bad", "a bid"] * 5, vocab_size=16)
    torch.manual_seed(0)
    model = TransformerLM(LMConfig(vocab_size=vocab.vocab_size, embed_dim=16, d_model=16,
                                   heads=2, ffn_dim=32, layers=2, dropout=0.0,
                                   attention_dropout=0.0)).eval()
    return model, vocab


def test_sprune_lm_word_scores_are_the_pieces_log10_probabilities(tiny_lm):
    from sprune.decode.ctc_neural_lm import SpruneWordLM

    model, vocab = tiny_lm
    words = ["bad", "bed", "<unk>", "dab"]
    lm = SpruneWordLM(model, vocab, chunk=2)
    lm.bind(words)

    def direct(history: list[str], word: str | None) -> float:
        ids = [i for w in history for i in vocab.encode(w)]
        new = vocab.encode(word) if word is not None else [vocab.sos_eos]
        tokens = torch.tensor([[vocab.sos_eos, *ids, *new]])
        logp = model.logits(tokens).log_softmax(-1)[0]
        return float(sum(logp[len(ids) + k, t] for k, t in enumerate(new)).detach()) / math.log(10)

    state = lm.start(False)
    state, score = lm.score(state, 0)                        # "bad" after nothing
    assert score == pytest.approx(direct([], "bad"), abs=1e-4)
    state, score = lm.score(state, 3)                        # "dab" after "bad"
    assert score == pytest.approx(direct(["bad"], "dab"), abs=1e-4)
    assert lm.finish(state)[1] == pytest.approx(direct(["bad", "dab"], None), abs=1e-4)
    passes = lm.forward_passes
    _, again = lm.score(lm.start(False), 0)          # a new utterance: the row is kept
    assert again == pytest.approx(direct([], "bad"), abs=1e-4)
    assert lm.forward_passes == passes


def test_sprune_lm_changes_the_decision(tmp_path, tiny_lm):
    from sprune.decode.ctc_neural_lm import SpruneWordLM

    model, vocab = tiny_lm
    lexicon = read_lexicon(lexicon_file(tmp_path), TOK)
    lm = SpruneWordLM(model, vocab)
    lm.bind(["bad", "bed", "bid", "<unk>"])
    # make the LM prefer whichever of bad / bed it scores lower acoustically: an LM weight
    # that is large enough flips the decision towards the LM's favourite (a word score keeps
    # the word cheaper than nothing)
    row = lm._row(())
    favourite = "bed" if row[1] > row[0] else "bad"
    weight = 2 * math.log(0.5 / 0.45) / abs(row[1] - row[0])
    lp = ambiguous_word() if favourite == "bed" else emissions(
        [{"b": 0.9}, {"<blank>": 0.9}, {"e": 0.5, "a": 0.45}, {"<blank>": 0.9}, {"d": 0.9}])
    other = "bad" if favourite == "bed" else "bed"
    assert FlashlightCTCDecoder(TOK, SearchOptions(beam=8), lexicon).texts(lp) == [other]
    fused = FlashlightCTCDecoder(TOK, SearchOptions(beam=8, lm_weight=weight, word_score=-weight
                                                    * min(row[0], row[1]) + 1), lexicon, lm=lm)
    assert fused.texts(lp) == [favourite]
    assert lm.forward_passes > 0


# ---- bad input ----------------------------------------------------------------------------

def test_a_lexicon_with_units_outside_the_model_is_one_line(tmp_path):
    path = tmp_path / "lexicon.txt"
    path.write_text("bad b a d\nbox b o x\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"line 2: unit 'o' of word 'box' is not one of the "
                                        r"model's 7 units"):
        read_lexicon(path, TOK)
    path.write_text("bad\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 1: word 'bad' has no spelling"):
        read_lexicon(path, TOK)
    with pytest.raises(UserError, match="does not exist"):
        read_lexicon(tmp_path / "missing.txt", TOK)


@pytest.mark.parametrize("content", [b"garbage\n", b"",
                                     b"\\data\\\nngram 1=3\nngram 2=2\n\n\\1-grams:\n-1\ta\n",
                                     b"mmap lm http://kheafield.com/code format version 5\n\0\1\2"])
def test_a_corrupt_ngram_file_is_one_line(tmp_path, content):
    from flashlight.lib.text.dictionary import create_word_dict

    path = tmp_path / "lm.arpa"
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"lm.arpa is not a readable ARPA or KenLM binary file "
                                        r"\(KenLM: .+\)") as err:
        load_kenlm(path, create_word_dict({"a": [["a"]], "<unk>": []}))
    assert "\n" not in str(err.value)


def test_missing_ngram_and_lm_without_lexicon_are_user_errors(tmp_path):
    lexicon = read_lexicon(lexicon_file(tmp_path), TOK)
    with pytest.raises(UserError, match="missing.arpa does not exist"):
        FlashlightCTCDecoder(TOK, SearchOptions(), lexicon, tmp_path / "missing.arpa")
    with pytest.raises(UserError, match="missing.arpa does not exist"):
        FlashlightCTCDecoder(TOK, SearchOptions(), None, tmp_path / "missing.arpa")
    with pytest.raises(UserError, match="give --lexicon FILE with --lm"):
        FlashlightCTCDecoder(TOK, SearchOptions(), None, None, lm=object())
    with pytest.raises(UserError, match="--word-score applies to lexicon search"):
        FlashlightCTCDecoder(TOK, SearchOptions(word_score=1.0))
