"""Phone transcripts for CTC with phone units: `text.phones` beside a data dir's `text`.

The recipe's data stage runs this once (`sprune phonemize data/train data/dev data/test`);
training and evaluation with `ctc.units: phone` then read `text.phones` instead of `text`:

    text          <utt> I moved and need to change my address.
    text.phones   <utt> aɪ mˈuːvd ænd nˈiːd tə tʃˈeɪndʒ maɪ ɐdɹˈɛs

Each utterance is phonemized by espeak-ng (`sprune.data.espeak.phonemize`) with the voice of
its language: `utt2lang` tag -> the voice of sprune's phrase table for that language
(`sprune.data.phrases`), unless a voice is given for the language or for the whole dir.
Identical sentences are phonemized once. The file is written atomically and keyed like the
other per-utterance files, so `sprune data subset` / `combine` do not carry it: phonemize
the dirs they write again.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping

from sprune.data.datadir import DataDir, read_mapping, read_table, write_mapping
from sprune.errors import UserError
from sprune.io import atomic_path

PHONES_FILE = "text.phones"


def voice_of_language(lang: str, lang_voices: Mapping[str, str] | None = None,
                      voice: str | None = None) -> str:
    """The espeak-ng voice for a language tag: `lang_voices[lang]`, else `voice`, else the
    voice of sprune's phrase table for that language (a `UserError` when it has none)."""
    from sprune.data.phrases import load_phrases, resolve_language

    if lang_voices and lang in lang_voices:
        return lang_voices[lang]
    if voice:
        return voice
    try:
        return load_phrases(resolve_language(lang)).voice
    except UserError:
        raise UserError(f"no espeak-ng voice known for language '{lang}'; pass "
                        f"--lang-voice {lang}=<voice> (see `espeak-ng --voices`)") from None


def phonemize_data_dir(path: str | os.PathLike, lang_voices: Mapping[str, str] | None = None,
                       voice: str | None = None,
                       phonemize: Callable[[str, str], str] | None = None) -> Path:
    """Write `<path>/text.phones` from `<path>/text`; returns the file written.

    lang_voices: language tag -> espeak-ng voice; voice: the voice for every utterance whose
    language is not in `lang_voices` (needed when the dir has no utt2lang). `phonemize`
    (text, voice) -> IPA defaults to espeak-ng's.
    """
    if phonemize is None:
        from sprune.data.espeak import phonemize
    data = DataDir.load(path)
    text_path = Path(path) / "text"
    if data.text is None:
        raise UserError(f"{text_path} is missing; phone transcripts are made from `text`")
    if data.utt2lang is None and not voice:
        raise UserError(f"{path}/utt2lang is missing; pass --voice to phonemize every "
                        "utterance with one espeak-ng voice")
    voices: dict[str, str] = {}
    cache: dict[tuple[str, str], str] = {}
    phones: dict[str, str] = {}
    lines = {utt: lineno for lineno, utt, _ in read_table(text_path)}
    for utt in data.utt_ids:
        lang = data.utt2lang[utt] if data.utt2lang is not None else ""
        if lang not in voices:
            voices[lang] = (voice_of_language(lang, lang_voices, voice) if lang
                            else str(voice))
        key = (voices[lang], data.text[utt])
        if key not in cache:
            cache[key] = phonemize(data.text[utt], voices[lang])
        if not cache[key].strip():
            raise UserError(f"{text_path}:{lines.get(utt, '?')} ({utt}): espeak-ng voice "
                            f"'{voices[lang]}' gives no phonemes for this transcript; fix or "
                            "remove it")
        phones[utt] = cache[key]
    out = Path(path) / PHONES_FILE
    with atomic_path(out) as tmp:
        write_mapping(tmp, phones)
    return out


def load_phone_transcripts(data: DataDir) -> dict[str, str]:
    """`text.phones` of a loaded data dir, checked to cover exactly its utterances."""
    path = Path(data.path or ".") / PHONES_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing; phone units need phone transcripts: run "
                        f"`sprune phonemize {data.path}` in the recipe's data stage")
    phones = read_mapping(path)
    missing = sorted(set(data.wav_scp) - set(phones))
    extra = sorted(set(phones) - set(data.wav_scp))
    if missing or extra:
        what = (f"no entry for utterance '{missing[0]}'" if missing
                else f"utterance '{extra[0]}' is not in wav.scp")
        raise UserError(f"{path}: {what}; it is out of date: run `sprune phonemize "
                        f"{data.path}` again")
    return phones


def with_phone_transcripts(data: DataDir) -> DataDir:
    """A copy of `data` whose `text` is its phone transcripts (`text.phones`)."""
    return DataDir(wav_scp=data.wav_scp, utt2spk=data.utt2spk,
                   text=load_phone_transcripts(data), utt2lang=data.utt2lang,
                   utt2intent=data.utt2intent, path=data.path)
