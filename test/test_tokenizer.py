"""Tokenizers: normalisation, IPA phone splitting, encode/decode, save/load, bad input."""
from __future__ import annotations

import pickle

import pytest

from sprune.data.tokenizer import (BLANK, WORD_BOUNDARY, BpeTokenizer, CharTokenizer,
                                   PhoneTokenizer, build_tokenizer, check_transcripts,
                                   load_tokenizer, normalize_text, split_phones)
from sprune.errors import UserError

TRAIN = ["Je voudrais payer ma facture.", "Quel est le taux d'intérêt ?",
         "I’d like to pay my bill, please!", "Mein Konto wurde gesperrt — warum?"]
# espeak-ng style IPA (as sprune.data.espeak.phonemize writes it)
PHONES = ["həlˈoʊ wˈɜːld", "ɡəʃˈɛftskɾeːdˈiːtə bˈiːtən", "ʒə vudʁˈɛ pɛjˈe", "pˈikːola t͡ʃˈao",
          "(en)ˈɒnlaɪn(de) ʃpˈɛrən"]


def test_normalize_text():
    assert normalize_text("I’d like, to PAY — 'my' bill!") == "i'd like to pay my bill"
    assert normalize_text("Taux d'intérêt ? Straße ŁÓDŹ") == "taux d'intérêt straße łódź"
    assert normalize_text("e\u0301te\u0301") == "été"        # decomposed accents compose (NFC)
    assert normalize_text("a|b  c\t") == "a b c"
    assert normalize_text("50 € ok") == "50 € ok"           # symbols stay: spell them out


def test_char_tokenizer_encode_decode():
    tok = build_tokenizer("char", TRAIN)
    assert isinstance(tok, CharTokenizer)
    assert tok.vocab[:2] == [BLANK, WORD_BOUNDARY] and tok.blank_id == 0
    assert "é" in tok.vocab and "ê" in tok.vocab and "'" in tok.vocab and "D" not in tok.vocab
    ids = tok.encode("Quel taux, d'intérêt?")
    assert 0 not in ids and ids.count(tok.vocab.index(WORD_BOUNDARY)) == 2
    assert tok.decode(ids) == "quel taux d'intérêt"
    assert tok.decode([0, *ids, 0]) == "quel taux d'intérêt"   # blanks are skipped


def test_split_phones_keeps_marks_and_merges_units():
    assert split_phones("ɡəʃˈɛftskɾeːdˈiːtə") == [
        "ɡ", "ə", "ʃ", "ɛ", "f", "ts", "k", "ɾ", "eː", "d", "iː", "t", "ə"]
    assert split_phones("həlˈoʊ") == ["h", "ə", "l", "oʊ"]
    assert split_phones("t͡ʃˈao") == ["t͡ʃ", "a", "o"]           # tie bar joins
    assert split_phones("mɔ̃") == ["m", "ɔ̃"]                     # combining tilde stays on
    assert split_phones("pʰʲa") == ["pʰʲ", "a"]                   # modifier letters stay on
    assert split_phones("ˈaˈɪ") == ["a", "ɪ"]                     # no merge across a stress mark
    assert split_phones("aɪ", multi_letter=()) == ["a", "ɪ"]


def test_phone_tokenizer_encode_decode():
    tok = build_tokenizer("phone", PHONES)
    assert isinstance(tok, PhoneTokenizer)
    assert {"oʊ", "ɜː", "ts", "kː", "t͡ʃ", "aɪ"} <= set(tok.vocab)
    assert "ˈ" not in "".join(tok.vocab) and "(" not in "".join(tok.vocab)
    assert tok.phones("həlˈoʊ wˈɜːld") == ["h", "ə", "l", "oʊ", "w", "ɜː", "l", "d"]
    ids = tok.encode("həlˈoʊ wˈɜːld")
    assert [tok.vocab[i] for i in ids] == ["h", "ə", "l", "oʊ", "|", "w", "ɜː", "l", "d"]
    assert tok.decode(ids) == tok.normalize("həlˈoʊ wˈɜːld") == "həloʊ wɜːld"
    plain = build_tokenizer("phone", PHONES, word_boundary=False)
    assert WORD_BOUNDARY not in plain.vocab and len(plain.encode("həlˈoʊ wˈɜːld")) == 8


def test_bpe_tokenizer_encode_decode():
    texts = TRAIN * 3 + ["le taux de mon prêt", "payer la facture du mois"]
    tok = build_tokenizer("bpe", texts, vocab_size=60)
    assert isinstance(tok, BpeTokenizer) and tok.vocab_size == 60
    assert tok.vocab[0] == BLANK and tok.vocab[1] == "<unk>"
    ids = tok.encode("Payer la facture!")
    assert ids and 0 not in ids and 1 not in ids
    assert len(ids) < len("payer la facture")                   # pieces, not characters
    assert tok.decode(ids) == "payer la facture"
    assert pickle.loads(pickle.dumps(tok)).encode("payer") == tok.encode("payer")


@pytest.mark.parametrize("kind", ["char", "phone", "bpe"])
def test_save_load_round_trip(tmp_path, kind):
    texts = PHONES if kind == "phone" else TRAIN * 3
    tok = build_tokenizer(kind, texts, vocab_size=40)
    path = tmp_path / f"tokenizer.{'model' if kind == 'bpe' else 'json'}"
    tok.save(path)
    back = load_tokenizer(path)
    assert type(back) is type(tok) and back.vocab == tok.vocab
    for text in texts:
        assert back.encode(text) == tok.encode(text)
        assert back.decode(back.encode(text)) == tok.decode(tok.encode(text))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing half-written left


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_out_of_vocabulary_characters_name_them_and_where(kind):
    tok = build_tokenizer(kind, TRAIN * 3, vocab_size=40)
    with pytest.raises(UserError) as err:
        tok.encode("Ça coûte 5 €", where="data/dev/text:7 (spk1-utt007)")
    message = str(err.value)
    assert message.startswith("data/dev/text:7 (spk1-utt007): ")
    for symbol in ("ç", "û", "5", "€"):
        assert f"'{symbol}'" in message
    assert "\n" not in message


def test_out_of_vocabulary_phones_name_them():
    tok = build_tokenizer("phone", PHONES)
    with pytest.raises(UserError, match=r"utt9: phone symbols 'θ' .* are not in the phone vocab"):
        tok.encode("θˈa", where="utt9")


def test_check_transcripts_names_file_and_line(tmp_path):
    tok = build_tokenizer("char", ["one two three"])
    text = tmp_path / "text"
    text.write_text("u1 one two\nu2 three\nu3 two four\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"text:3 \(u3\): char symbols 'f' .*'u'"):
        check_transcripts(tok, text)
    text.write_text("u1 one two\nu2 ?!\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"text:2 \(u2\): the transcript is empty"):
        check_transcripts(tok, text)
    text.write_text("u1 one two\nu2 three\n", encoding="utf-8")
    check_transcripts(tok, text)


def test_bad_build_and_load_requests_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown tokenizer kind 'word'"):
        build_tokenizer("word", TRAIN)
    with pytest.raises(UserError, match="no training transcripts"):
        build_tokenizer("char", ["", "  "])
    with pytest.raises(UserError, match="vocab_size"):
        build_tokenizer("bpe", TRAIN)
    with pytest.raises(UserError, match="lower vocab_size"):
        build_tokenizer("bpe", ["ab ab"], vocab_size=500)
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"vocab": ["a"]}', encoding="utf-8")
    with pytest.raises(UserError, match="needs 'kind' and 'vocab'"):
        load_tokenizer(bad)
    bad.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(UserError, match="neither a tokenizer JSON file nor a sentencepiece"):
        load_tokenizer(bad)
