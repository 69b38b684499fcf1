"""Output units for CTC: characters, phones and sentencepiece BPE, behind one interface.

Every tokenizer has

    vocab              list of tokens; the index is the id; vocab[0] is the CTC blank
    normalize(text)    the text as the tokenizer sees it (references for WER are normalised too)
    encode(text, where=None) -> list[int]    a symbol outside the vocabulary is a UserError
                                             naming the symbols and `where` (file:line, utt id)
    decode(ids) -> str                       blanks are skipped
    save(path) / load_tokenizer(path)

Kinds:

* ``char``: letters of the training text, word boundary ``|`` (wav2vec2 fine-tuning style).
  Normalisation (`normalize_text`): Unicode NFC, lowercase, typographic apostrophes become
  ``'``; punctuation becomes a space, except apostrophes inside a word (``don't``, ``l'heure``);
  whitespace runs collapse to one space; a literal ``|`` is a space too. Letters of every script are kept with their accents
  (``é``, ``ß``, ``ł``); digits and symbols (``€``, ``%``) are kept too, so a transcript that
  still has them must be written out in words, or they must occur in the training text.
* ``phone``: IPA as written by `sprune.data.espeak.phonemize` (words separated by spaces),
  split into phones by `split_phones`; word boundary ``|`` between words (optional).
* ``bpe``: a sentencepiece BPE model trained on the normalised training text
  (`normalize_text`), ``▁`` marks word starts; id 0 is the blank (sentencepiece's pad piece),
  id 1 ``<unk>``. Saved as the sentencepiece ``.model`` file itself.

Char and phone tokenizers save as JSON; `load_tokenizer` tells the formats apart.
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

from sprune.data.datadir import read_table
from sprune.errors import UserError
from sprune.io import atomic_path, atomic_write_text

BLANK = "<blank>"
BLANK_ID = 0
WORD_BOUNDARY = "|"
KINDS = ("char", "phone", "bpe")

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})

# Stress marks are suprasegmental: dropped from phones, but they still mark a syllable start,
# so two letters on either side of one are never merged into a diphthong or affricate.
STRESS_MARKS = "ˈˌ"
TIE_BARS = "\u0361\u035c"
# espeak-ng's multi-letter phonemes for the languages sprune ships (affricates, diphthongs),
# written without tie bars. A sequence listed here is one phone when nothing separates it.
MULTI_LETTER_PHONES = (
    "tʃ", "dʒ", "ts", "dz", "tɕ", "dʑ", "tʂ", "dʐ", "pf",
    "aɪ", "aʊ", "eɪ", "oʊ", "əʊ", "ɔɪ", "eə", "ɪə", "ʊə", "ɛɪ", "ʌʊ", "œy", "ɔʏ",
)
_LANGUAGE_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)*\)")  # espeak-ng's "(en)...(de)"


def normalize_text(text: str) -> str:
    """Normalise a transcript for character and BPE units (see the module docstring)."""
    text = unicodedata.normalize("NFC", text).lower().translate(_APOSTROPHES)
    out = []
    for i, ch in enumerate(text):
        if ch == "'":
            inside = (0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum())
            out.append(ch if inside else " ")
        elif unicodedata.category(ch).startswith("P") or ch == WORD_BOUNDARY:
            out.append(" ")
        else:
            out.append(ch)
    return " ".join("".join(out).split())


def _attaches_to_previous(ch: str) -> bool:
    """Length marks, modifier letters (ʰ ʲ ʷ ː) and combining diacritics (̃ ̩) and tone letters."""
    return unicodedata.category(ch) in ("Lm", "Mn", "Sk") and ch not in STRESS_MARKS


def split_phones(ipa_word: str, multi_letter: Iterable[str] = MULTI_LETTER_PHONES) -> list[str]:
    """Split one IPA word into phones: 'ɡəʃˈɛftskɾeːdˈiːtə' -> ['ɡ', 'ə', 'ʃ', 'ɛ', 'f', 'ts',
    'k', 'ɾ', 'eː', 'd', 'iː', 't', 'ə'].

    Each letter keeps the diacritics, modifier letters and length marks that follow it; a tie
    bar joins the letters around it; adjacent letters listed in `multi_letter` become one phone
    unless a stress mark separates them; stress marks are dropped. Phones are NFC-normalised.
    """
    merges = set(multi_letter)
    longest = max((len(m) for m in merges), default=1)
    segments: list[list[str]] = []   # [phone, starts_syllable]
    joining = False
    for ch in unicodedata.normalize("NFD", ipa_word):
        if ch in STRESS_MARKS:
            segments.append(["", True])
            continue
        if segments and segments[-1][0] and (joining or _attaches_to_previous(ch)):
            segments[-1][0] += ch
            joining = ch in TIE_BARS
            continue
        if segments and segments[-1][0] == "":
            segments[-1][0] = ch          # the letter after a stress mark starts a syllable
        else:
            segments.append([ch, False])
        joining = False
    phones: list[str] = []
    i = 0
    pieces = [(unicodedata.normalize("NFC", s), start) for s, start in segments if s]
    while i < len(pieces):
        size = 1
        for n in range(min(longest, len(pieces) - i), 1, -1):
            if any(start for _, start in pieces[i + 1:i + n]):
                continue
            if "".join(p for p, _ in pieces[i:i + n]) in merges:
                size = n
                break
        phones.append("".join(p for p, _ in pieces[i:i + size]))
        i += size
    return phones


def _describe(symbols: Iterable[str]) -> str:
    return ", ".join(f"'{s}' ({' '.join(f'U+{ord(c):04X}' for c in s)})" for s in sorted(set(symbols)))


class Tokenizer:
    """Base class: a vocabulary whose index 0 is the CTC blank."""

    kind = ""

    def __init__(self, vocab: Sequence[str]) -> None:
        if not vocab or vocab[0] != BLANK:
            raise ValueError(f"vocab[0] must be {BLANK!r}")
        self.vocab = list(vocab)
        self.index = {tok: i for i, tok in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def blank_id(self) -> int:
        return BLANK_ID

    def normalize(self, text: str) -> str:
        raise NotImplementedError

    def tokens(self, text: str) -> list[str]:
        """The token strings of a text, before looking them up in the vocabulary."""
        raise NotImplementedError

    def encode(self, text: str, where: str | None = None) -> list[int]:
        """Token ids of `text`; symbols outside the vocabulary are a `UserError` naming `where`."""
        toks = self.tokens(text)
        unknown = [t for t in toks if t not in self.index]
        if unknown:
            raise self.out_of_vocabulary(unknown, where)
        return [self.index[t] for t in toks]

    def out_of_vocabulary(self, symbols: Iterable[str], where: str | None) -> UserError:
        return UserError(f"{where or 'transcript'}: {self.kind} symbols {_describe(symbols)} "
                         f"are not in the {self.kind} vocabulary (built from the training text); "
                         "spell them out in the transcript or add training text with them")

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def to_json(self) -> dict:
        return {"kind": self.kind, "vocab": self.vocab}

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False, indent=1) + "\n")


class CharTokenizer(Tokenizer):
    """Characters of `normalize_text` output; '|' between words."""

    kind = "char"

    @classmethod
    def build(cls, texts: Iterable[str]) -> "CharTokenizer":
        chars = {ch for text in texts for ch in normalize_text(text).replace(" ", "")}
        chars.discard(WORD_BOUNDARY)
        return cls([BLANK, WORD_BOUNDARY, *sorted(chars)])

    def normalize(self, text: str) -> str:
        return normalize_text(text)

    def tokens(self, text: str) -> list[str]:
        return list(self.normalize(text).replace(" ", WORD_BOUNDARY))

    def decode(self, ids: Iterable[int]) -> str:
        text = "".join(self.vocab[i] for i in ids if i != BLANK_ID)
        return " ".join(text.replace(WORD_BOUNDARY, " ").split())


class PhoneTokenizer(Tokenizer):
    """Phones of IPA words (`split_phones`); '|' between words when `word_boundary`."""

    kind = "phone"

    def __init__(self, vocab: Sequence[str], word_boundary: bool = True,
                 multi_letter: Sequence[str] = MULTI_LETTER_PHONES) -> None:
        super().__init__(vocab)
        self.word_boundary = word_boundary
        self.multi_letter = tuple(multi_letter)

    @classmethod
    def build(cls, texts: Iterable[str], word_boundary: bool = True,
              multi_letter: Sequence[str] = MULTI_LETTER_PHONES) -> "PhoneTokenizer":
        probe = cls([BLANK], word_boundary, multi_letter)
        phones = {p for text in texts for p in probe.phones(text)}
        phones.discard(WORD_BOUNDARY)
        head = [BLANK, WORD_BOUNDARY] if word_boundary else [BLANK]
        return cls([*head, *sorted(phones)], word_boundary, multi_letter)

    def words(self, text: str) -> list[list[str]]:
        """Phones per word: 'həlˈoʊ wˈɜːld' -> [['h', 'ə', 'l', 'oʊ'], ['w', 'ɜː', 'l', 'd']]."""
        text = _LANGUAGE_SWITCH.sub(" ", text)
        return [ph for word in text.split() if (ph := split_phones(word, self.multi_letter))]

    def phones(self, text: str) -> list[str]:
        """The phone sequence of a text, without word boundaries (the units of PER)."""
        return [p for word in self.words(text) for p in word]

    def normalize(self, text: str) -> str:
        """Phones of each word joined back, stress removed: 'həlˈoʊ' -> 'həloʊ'."""
        return " ".join("".join(word) for word in self.words(text))

    def tokens(self, text: str) -> list[str]:
        out: list[str] = []
        for word in self.words(text):
            if out and self.word_boundary:
                out.append(WORD_BOUNDARY)
            out.extend(word)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        words, current = [], []
        for i in ids:
            if i == BLANK_ID:
                continue
            if self.vocab[i] == WORD_BOUNDARY:
                words.append("".join(current))
                current = []
            else:
                current.append(self.vocab[i])
        words.append("".join(current))
        return " ".join(w for w in words if w)

    def to_json(self) -> dict:
        return {**super().to_json(), "word_boundary": self.word_boundary,
                "multi_letter_phones": list(self.multi_letter)}


class BpeTokenizer(Tokenizer):
    """A sentencepiece BPE model over `normalize_text` output."""

    kind = "bpe"

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece

        self.model_proto = model_proto
        self.sp = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
        if self.sp.pad_id() != BLANK_ID:
            raise UserError("this sentencepiece model has no blank at id 0 (pad_id=0); "
                            "train it with `build_tokenizer('bpe', ...)`")
        super().__init__([self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())])
        self.known_chars = {ch for piece in self.vocab[1:] if not self.sp.is_control(self.index[piece])
                            and not self.sp.is_unknown(self.index[piece]) for ch in piece} - {"▁"}

    def __reduce__(self):  # the sentencepiece processor itself does not pickle
        return (BpeTokenizer, (self.model_proto,))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BpeTokenizer":
        """Train BPE with `vocab_size` pieces (blank and <unk> included) on normalised `texts`."""
        import io

        import sentencepiece

        sentences = [t for t in (normalize_text(x) for x in texts) if t]
        if not sentences:
            raise UserError("no training text for the BPE model; the training data dir needs a "
                            "non-empty `text` file")
        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences), model_writer=model, model_type="bpe",
                vocab_size=vocab_size, character_coverage=1.0, pad_id=BLANK_ID, pad_piece=BLANK,
                unk_id=1, bos_id=-1, eos_id=-1, normalization_rule_name="identity",
                num_threads=1, minloglevel=2)
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[-1].rsplit("] ", 1)[-1]
            raise UserError(f"sentencepiece cannot train a BPE model of vocab_size {vocab_size} "
                            f"on this text ({reason}); lower vocab_size") from None
        return cls(model.getvalue())

    @classmethod
    def train_from_file(cls, path: str | os.PathLike, vocab_size: int) -> "BpeTokenizer":
        """Train on a plain text file, one sentence per line."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"BPE training text {path} does not exist")
        return cls.train(path.read_text(encoding="utf-8").splitlines(), vocab_size)

    def normalize(self, text: str) -> str:
        return normalize_text(text)

    def tokens(self, text: str) -> list[str]:
        return self.sp.encode(self.normalize(text), out_type=str)

    def encode(self, text: str, where: str | None = None) -> list[int]:
        # sentencepiece maps unseen characters to <unk> silently: refuse them instead.
        text = self.normalize(text)
        unknown = set(text.replace(" ", "")) - self.known_chars
        if unknown:
            raise self.out_of_vocabulary(unknown, where)
        return self.sp.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids if i != BLANK_ID])

    def save(self, path: str | os.PathLike) -> None:
        """Write the sentencepiece model file (usable by spm_encode / spm_decode)."""
        with atomic_path(path) as tmp:
            tmp.write_bytes(self.model_proto)


def build_tokenizer(kind: str, texts: Iterable[str], *, vocab_size: int | None = None,
                    word_boundary: bool = True) -> Tokenizer:
    """Build a tokenizer of `kind` (char | phone | bpe) from training transcripts."""
    texts = list(texts)
    if not any(t.strip() for t in texts):
        raise UserError("no training transcripts to build the vocabulary from; the training "
                        "data dir needs a non-empty `text` file")
    if kind == "char":
        return CharTokenizer.build(texts)
    if kind == "phone":
        return PhoneTokenizer.build(texts, word_boundary=word_boundary)
    if kind == "bpe":
        if vocab_size is None or vocab_size < 3:
            raise UserError(f"bpe units need vocab_size >= 3 (got {vocab_size}); set "
                            "tokenizer.vocab_size, e.g. 100 for small corpora")
        return BpeTokenizer.train(texts, vocab_size)
    raise UserError(f"unknown tokenizer kind '{kind}'; use one of {', '.join(KINDS)}")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load what `Tokenizer.save` wrote: JSON (char, phone) or a sentencepiece model (bpe)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer file {path} does not exist; run the recipe's tokenizer stage")
    raw = path.read_bytes()
    if raw.lstrip()[:1] != b"{":
        try:
            return BpeTokenizer(raw)
        except UserError:
            raise
        except Exception:
            raise UserError(f"{path} is neither a tokenizer JSON file nor a sentencepiece "
                            "model; rebuild it with the recipe's tokenizer stage") from None
    try:
        data = json.loads(raw.decode("utf-8"))
        kind, vocab = data["kind"], data["vocab"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not a valid tokenizer JSON file (needs 'kind' and 'vocab'); "
                        "rebuild it with the recipe's tokenizer stage") from None
    if not isinstance(vocab, list) or not vocab or vocab[0] != BLANK:
        raise UserError(f"{path}: 'vocab' must be a list starting with '{BLANK}'")
    if kind == "char":
        return CharTokenizer(vocab)
    if kind == "phone":
        return PhoneTokenizer(vocab, bool(data.get("word_boundary", True)),
                              data.get("multi_letter_phones", MULTI_LETTER_PHONES))
    raise UserError(f"{path}: unknown tokenizer kind '{kind}'; expected char or phone "
                    "(bpe tokenizers are saved as sentencepiece models)")


def check_transcripts(tokenizer: Tokenizer, text_path: str | os.PathLike) -> None:
    """Encode every line of a Kaldi `text` file; the first line with a symbol outside the
    vocabulary (or nothing left after normalisation) is a `UserError` naming file:line (utt)."""
    for lineno, utt, transcript in read_table(text_path):
        if not utt:
            continue
        where = f"{text_path}:{lineno} ({utt})"
        if not tokenizer.encode(transcript, where=where):
            raise UserError(f"{where}: the transcript is empty after normalisation; ASR needs "
                            "at least one unit per utterance: fix or remove it")
