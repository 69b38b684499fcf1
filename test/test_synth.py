"""The offline spoken-intent corpus: phrase tables, the espeak-ng backends, `sprune synth`
and the mini_minds recipe's local/data.sh."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from sprune import cli
from sprune.data import espeak
from sprune.data.audio import resample
from sprune.data.datadir import DataDir
from sprune.data.phrases import (INTENTS, LANGUAGES, MIN_PHRASINGS, load_phrases,
                                 parse_intents, parse_languages, resolve_language)
from sprune.data.synth import (RATE_RANGE, SPLITS, check_rate_range, cut_silence,
                                plan_speakers, split_sizes, synthesize_corpus)
from sprune.data.validate import count_errors, validate_data_dir
from sprune.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None and espeak._library_paths() is None,
    reason="espeak-ng is not installed (tools/install.sh installs it)")

# 2 languages x 2 intents x 2 phrasings x (2 train + 1 dev + 1 test speakers) = 32 utterances.
TINY = dict(langs=["en-US", "fr"], phrasings_per_intent=2, n_speakers=4,
            speakers_per_phrasing=(2, 1, 1), intents=["balance", "freeze"], progress=False)


def wav_digests(out_dir: Path) -> dict[str, str]:
    return {p.relative_to(out_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((out_dir / "wav").rglob("*.wav"))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "seed0"
    report = synthesize_corpus(out, seed=0, jobs=1, **TINY)
    assert report.written == 32 and report.reused == 0
    return out


# --- phrase tables ---------------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_language_has_every_intent_with_enough_distinct_phrasings(lang):
    table = load_phrases(lang)
    assert table.lang == lang
    assert set(table.phrasings) == set(INTENTS) and len(INTENTS) == 14
    for intent, sentences in table.phrasings.items():
        assert len(set(sentences)) == len(sentences) >= MIN_PHRASINGS, (lang, intent)
        for sentence in sentences:
            assert sentence.strip() and "\n" not in sentence
            assert not any(ch.isdigit() for ch in sentence), f"{lang}: say numbers in words"


def test_languages_do_not_share_sentences_and_english_variants_differ():
    tables = {lang: load_phrases(lang) for lang in LANGUAGES}
    sentences = {lang: {s for ss in t.phrasings.values() for s in ss} for lang, t in tables.items()}
    for lang in ("fr-FR", "de-DE", "es-ES", "it-IT", "nl-NL", "pl-PL"):
        others = set().union(*(s for other, s in sentences.items() if other != lang))
        assert not sentences[lang] & others, lang
    assert len(sentences["en-GB"] - sentences["en-US"]) >= 20
    assert len(sentences["en-AU"] - sentences["en-GB"] - sentences["en-US"]) >= 10
    assert any("current account" in s for s in sentences["en-GB"])
    assert not any("current account" in s for s in sentences["en-US"])


def test_language_names_resolve_and_unknown_ones_are_user_errors():
    assert resolve_language("fr") == "fr-FR"
    assert resolve_language("en") == "en-US"
    assert resolve_language("EN_gb") == "en-GB"
    assert parse_languages("en, fr-FR,fr") == ["en-US", "fr-FR"]
    assert parse_languages("all") == list(LANGUAGES)
    with pytest.raises(UserError, match="unknown language 'klingon'.*en-US"):
        resolve_language("klingon")
    with pytest.raises(UserError, match="empty language name"):
        parse_languages("en,,fr")
    assert parse_intents("Balance,pay bill") == ["balance", "pay_bill"]
    with pytest.raises(UserError, match="unknown intent 'loan'"):
        parse_intents("balance,loan")


# --- espeak-ng backends ----------------------------------------------------------------------

def assert_speech(wav: np.ndarray, rate: int) -> None:
    assert wav.dtype == np.float32 and wav.ndim == 1 and rate > 0
    assert 0.3 * rate < len(wav) < 10 * rate
    assert np.sqrt(np.mean(wav ** 2)) > 0.01 and np.abs(wav).max() <= 1.0


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_language_voice_speaks_and_its_variants_sound_different(lang):
    voice = load_phrases(lang).voice
    sentence = load_phrases(lang).phrasings["balance"][0]
    male, rate = espeak.synthesize(sentence, espeak.Voice(voice, "m3", 170, 50))
    female, _ = espeak.synthesize(sentence, espeak.Voice(voice, "f2", 170, 50))
    assert_speech(male, rate)
    # espeak-ng 1.51 silently ignores the variant of some voice names (fr-fr+f2 = fr-fr).
    assert len(male) != len(female) or not np.array_equal(male, female)


def test_rate_changes_duration_and_synthesis_is_deterministic():
    sentence = "I would like to check my balance."
    slow, _ = espeak.synthesize(sentence, espeak.Voice("en-us", rate=120))
    fast, _ = espeak.synthesize(sentence, espeak.Voice("en-us", rate=220))
    again, _ = espeak.synthesize(sentence, espeak.Voice("en-us", rate=120))
    assert len(slow) > 1.4 * len(fast)
    assert np.array_equal(slow, again)


def test_phonemize_gives_ipa_words():
    ipa = espeak.phonemize("Check my balance, please. Thanks!", "en-us")
    assert "\n" not in ipa and ipa == " ".join(ipa.split())
    assert "ˈ" in ipa and "tʃ" in ipa and "æ" in ipa
    assert not set(ipa) & set(",.!-_")
    assert espeak.phonemize("bonjour", "fr").replace("ˈ", "") == "bɔ̃ʒuʁ"
    assert espeak.phonemize("...", "en-us") == ""
    with pytest.raises(UserError, match="nosuchvoice"):
        espeak.phonemize("hello", "nosuchvoice")


def test_bad_voice_settings_and_missing_backend_are_user_errors(monkeypatch):
    with pytest.raises(UserError, match="voice"):
        espeak.synthesize("hello", espeak.Voice("nosuchvoice"))
    with pytest.raises(UserError, match="rate 20"):
        espeak.Voice("en-us", rate=20)
    with pytest.raises(UserError, match="pitch 120"):
        espeak.Voice("en-us", pitch=120)
    with pytest.raises(UserError, match="empty sentence"):
        espeak.synthesize("  ", espeak.Voice("en-us"))
    monkeypatch.setattr(espeak.shutil, "which", lambda name: None)
    monkeypatch.setattr(espeak, "_library_paths", lambda: None)
    with pytest.raises(UserError, match="not installed; run tools/install.sh"):
        espeak._make_backend.__wrapped__(None)
    with pytest.raises(UserError, match="SPRUNE_ESPEAK=festival"):
        espeak._make_backend.__wrapped__("festival")


def test_ctypes_backend_of_espeakng_loader(monkeypatch):
    pytest.importorskip("espeakng_loader")
    monkeypatch.setenv("SPRUNE_ESPEAK", "library")
    assert espeak.backend_name().startswith("library espeak-ng")
    wav, rate = espeak.synthesize("Quel est le solde de mon compte ?", espeak.Voice("fr", "f2"))
    assert rate == 22050
    assert_speech(wav, rate)
    other, _ = espeak.synthesize("Quel est le solde de mon compte ?", espeak.Voice("fr", "m3"))
    assert len(other) != len(wav) or not np.array_equal(other, wav)
    # The library keeps state between utterances and f5 breathes random noise: the same call
    # must still give the same samples, here and in a fresh process.
    script = ("import hashlib; from sprune.data import espeak; "
              "w, _ = espeak.synthesize('Freeze my card.', espeak.Voice('en-us', 'f5', 150, 60)); "
              "print(hashlib.sha256(w.tobytes()).hexdigest())")
    digests = {hashlib.sha256(espeak.synthesize("Freeze my card.", espeak.Voice(
        "en-us", "f5", 150, 60))[0].tobytes()).hexdigest() for _ in range(2)}
    library_env = dict(os.environ, SPRUNE_ESPEAK="library", PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=library_env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert digests == {proc.stdout.strip()}
    ipa = espeak.phonemize("Check my balance, please.", "en-us")
    assert "ˈ" in ipa and "tʃ" in ipa and "\n" not in ipa
    with pytest.raises(UserError, match="no voice 'nosuchvoice'"):
        espeak.synthesize("hello", espeak.Voice("nosuchvoice"))


# --- the corpus ------------------------------------------------------------------------------

def test_corpus_dirs_are_valid_16k_mono_and_complete(corpus):
    names = sorted(p.name for p in corpus.iterdir() if p.name != "wav")
    assert names == sorted(f"{s}_{lang}" for s in SPLITS for lang in ("en-US", "fr-FR"))
    for name in names:
        assert count_errors(validate_data_dir(corpus / name)) == 0, name
        data = DataDir.load(corpus / name)
        lang = name.split("_", 1)[1]
        assert set(data.utt2lang.values()) == {lang}
        assert set(data.utt2intent.values()) <= set(INTENTS)
        assert set(data.utt2intent.values()) == {"balance", "freeze"}
        allowed = {s for i in ("balance", "freeze") for s in load_phrases(lang).phrasings[i][:2]}
        assert set(data.text.values()) == allowed  # every phrasing is in every split
        for utt, path in data.wav_scp.items():
            assert Path(path).is_absolute() and Path(path).is_file()
            assert utt.startswith(data.utt2spk[utt] + "-")
            info = soundfile.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")


def test_splits_are_speaker_disjoint_and_phrasings_have_several_speakers(corpus):
    for lang in ("en-US", "fr-FR"):
        dirs = {s: DataDir.load(corpus / f"{s}_{lang}") for s in SPLITS}
        speakers = {s: set(d.utt2spk.values()) for s, d in dirs.items()}
        assert [len(speakers[s]) for s in SPLITS] == [2, 1, 1]
        assert not speakers["train"] & (speakers["dev"] | speakers["test"])
        assert not speakers["dev"] & speakers["test"]
        assert all(spk.startswith(f"{lang}-s") for spk in set().union(*speakers.values()))
        train = dirs["train"]
        by_sentence: dict[str, set[str]] = {}
        for utt, text in train.text.items():
            by_sentence.setdefault(text, set()).add(train.utt2spk[utt])
        assert len(by_sentence) == 4 and all(len(s) == 2 for s in by_sentence.values())


def test_audio_is_varied_and_not_trivially_clean(corpus):
    wavs = [soundfile.read(p, dtype="float32")[0] for p in sorted((corpus / "wav").rglob("*.wav"))]
    peaks = [np.abs(w).max() for w in wavs]
    assert 0.2 < min(peaks) and max(peaks) < 0.95 and max(peaks) - min(peaks) > 0.1
    lead = [np.argmax(np.abs(w) > 0.05) / 16000 for w in wavs]
    assert max(lead) - min(lead) > 0.1  # leading silence differs
    noisy = [w for w in wavs if np.abs(w[:400]).max() > 0]
    assert 0 < len(noisy) < len(wavs)  # some have a noise floor, some digital silence


def test_same_seed_is_byte_identical_with_a_pool_and_another_seed_differs(corpus, tmp_path):
    again = synthesize_corpus(tmp_path / "again", seed=0, jobs=2, **TINY)
    assert again.written == 32
    assert wav_digests(tmp_path / "again") == wav_digests(corpus)
    for name in ("train_en-US", "test_fr-FR"):
        for file in ("text", "utt2spk", "utt2intent", "spk2utt"):
            assert (tmp_path / "again" / name / file).read_text() == \
                (corpus / name / file).read_text()
    synthesize_corpus(tmp_path / "seed1", seed=1, jobs=1, **TINY)
    other = wav_digests(tmp_path / "seed1")
    same = wav_digests(corpus)
    assert not set(other.values()) & set(same.values())
    split = (0.6, 0.2, 0.2)
    assert plan_speakers("en-US", 4, split, 0) != plan_speakers("en-US", 4, split, 1)


def test_a_killed_run_resumes_and_other_settings_are_refused(corpus, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(corpus, out)
    before = wav_digests(out)
    victims = sorted((out / "wav" / "fr-FR").glob("*.wav"))[:3]
    for victim in victims:
        victim.unlink()
    shutil.rmtree(out / "dev_fr-FR")
    report = synthesize_corpus(out, seed=0, jobs=1, **TINY)
    assert (report.written, report.reused) == (3, 29)
    assert wav_digests(out) == before
    assert count_errors(validate_data_dir(out / "dev_fr-FR")) == 0
    with pytest.raises(UserError, match=r"wav/en-US was synthesized with other settings "
                                        r"\(seed, speakers differ\).*delete"):
        synthesize_corpus(out, seed=5, jobs=1, **TINY)
    assert wav_digests(out) == before


def test_another_rate_range_or_trim_is_refused_and_old_manifests_mean_the_defaults(corpus,
                                                                                  tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(corpus, out)
    manifest = out / "wav" / "en-US" / "synth.json"
    pinned = json.loads(manifest.read_text())
    assert (pinned["rate_range"], pinned["trim_silence"]) == ([130, 190], None)
    with pytest.raises(UserError, match=r"wav/en-US was synthesized with other settings "
                                        r"\(rate_range, speakers differ\).*delete"):
        synthesize_corpus(out, seed=0, jobs=1, rate_range=(200, 260), **TINY)
    with pytest.raises(UserError, match=r"\(trim_silence differ\)"):
        synthesize_corpus(out, seed=0, jobs=1, trim_silence=0.1, **TINY)
    # A corpus pinned before these two options existed: absent keys mean the defaults.
    for path in (out / "wav").glob("*/synth.json"):
        old = {k: v for k, v in json.loads(path.read_text()).items()
               if k not in ("rate_range", "trim_silence")}
        path.write_text(json.dumps(old, indent=1, sort_keys=True) + "\n")
    old_text = manifest.read_text()
    report = synthesize_corpus(out, seed=0, jobs=1, rate_range=RATE_RANGE, **TINY)
    assert (report.written, report.reused) == (0, 32)
    assert manifest.read_text() == old_text
    with pytest.raises(UserError, match=r"\(trim_silence differ\)"):
        synthesize_corpus(out, seed=0, jobs=1, trim_silence=0.1, **TINY)


def test_speaker_rates_are_drawn_in_the_rate_range():
    split = (0.6, 0.2, 0.2)
    rates = [s.voice.rate for s in plan_speakers("fr", 40, split, 0, rate_range=(300, 310))]
    assert set(rates) == set(range(300, 311))
    assert {s.voice.rate for s in plan_speakers("de", 5, split, 0, (250, 250))} == {250}
    default = plan_speakers("en-US", 20, split, 0)
    assert default == plan_speakers("en-US", 20, split, 0, rate_range=(130, 190))
    assert all(130 <= s.voice.rate <= 190 for s in default)
    assert check_rate_range([80, 450]) == (80, 450)
    for bad in ((79, 100), (200, 199), (100, 451), (100,), (100, 150, 200), (100.5, 200)):
        with pytest.raises(UserError, match="--rate-range .* 80 <= LO <= HI <= 450"):
            check_rate_range(bad)


def test_cut_silence_keeps_the_margin_and_never_cuts_the_burst():
    rng = np.random.default_rng(0)
    burst = rng.uniform(0.2, 0.5, 8000) * rng.choice([-1, 1], 8000)
    burst[3000:5000] = 0  # a pause inside the speech is kept
    hiss = lambda n: rng.normal(0, 0.0005, n)  # noqa: E731  (below 1 % of the 0.5 peak)
    wav = np.concatenate([hiss(16000), burst, hiss(4800)]).astype(np.float32)
    cut = cut_silence(wav, 0.1)
    assert len(cut) == 1600 + 8000 + 1600
    assert np.array_equal(cut, wav[16000 - 1600:24000 + 1600])
    assert np.array_equal(cut_silence(wav, 0), wav[16000:24000])
    assert np.array_equal(cut_silence(wav, 0.5), wav[16000 - 8000:])  # only 0.3 s after
    quiet_end = wav.copy()
    quiet_end[24000 - 1] = 0.006  # a loud sample is >= 1 % of the peak, however quiet
    assert len(cut_silence(quiet_end, 0)) == 8000
    for silent in (np.zeros(800, np.float32), np.zeros(0, np.float32)):
        assert np.array_equal(cut_silence(silent, 0.1), silent)


def test_trimmed_fast_corpus_has_the_asked_silence_and_rates(tmp_path):
    out = tmp_path / "short"
    synthesize_corpus(out, ["en"], phrasings_per_intent=1, n_speakers=3,
                      speakers_per_phrasing=(1, 1, 1), intents=["balance"], jobs=1,
                      progress=False, rate_range=(300, 320), trim_silence=0.05)
    pinned = json.loads((out / "wav" / "en-US" / "synth.json").read_text())
    assert (pinned["rate_range"], pinned["trim_silence"]) == ([300, 320], 0.05)
    voices = {s.spk_id: s.voice for s in plan_speakers("en", 3, (0.6, 0.2, 0.2), 0, (300, 320))}
    assert all(300 <= v.rate <= 320 for v in voices.values())
    for split in SPLITS:
        data = DataDir.load(out / f"{split}_en-US")
        for utt, path in data.wav_scp.items():
            clean, rate = espeak.synthesize(data.text[utt], voices[data.utt2spk[utt]])
            clean = resample(clean, rate, 16000)
            loud = np.flatnonzero(np.abs(clean) >= 0.01 * np.abs(clean).max())
            trimmed = cut_silence(clean, 0.05)
            assert len(trimmed) <= loud[-1] + 1 - loud[0] + 2 * 800
            assert soundfile.info(path).frames == len(trimmed)  # and no silence was added


def test_bad_corpus_settings_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="at least 3 speakers"):
        synthesize_corpus(tmp_path / "a", ["en"], n_speakers=2, progress=False)
    with pytest.raises(UserError, match="2 dev speakers but en-US has only 1"):
        synthesize_corpus(tmp_path / "a", ["en"], n_speakers=4, speakers_per_phrasing=(1, 2, 1),
                          progress=False)
    with pytest.raises(UserError, match="three positive fractions"):
        split_sizes(10, (0.5, 0.5))
    with pytest.raises(UserError, match="unknown intent 'loan'"):
        synthesize_corpus(tmp_path / "a", ["en"], intents=["loan"], progress=False)
    with pytest.raises(UserError, match="jobs must be at least 1"):
        synthesize_corpus(tmp_path / "a", ["en"], jobs=0, progress=False)
    with pytest.raises(UserError, match="unknown language 'xx'"):
        synthesize_corpus(tmp_path / "a", ["xx"], progress=False)
    assert not (tmp_path / "a").exists()  # nothing written for a bad plan
    assert split_sizes(10, (0.6, 0.2, 0.2)) == (6, 2, 2)
    assert split_sizes(3, (0.8, 0.1, 0.1)) == (1, 1, 1)


# --- the command and the recipe --------------------------------------------------------------

def test_cli_writes_a_corpus_and_summarises_it(tmp_path, capsys):
    code = cli.main(["synth", "--out", str(tmp_path / "c"), "--langs", "de,es", "--intents",
                     "atm_limit", "--phrasings", "1", "--speakers", "3",
                     "--speakers-per-phrasing", "1,1,1", "--seed", "3", "--jobs", "1", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "test_es-ES" in out and "6 utterances (6 spoken, 0 already there)" in out
    assert DataDir.load(tmp_path / "c" / "dev_de-DE").utt2intent == {"de-DE-s02-atm_limit-01":
                                                                     "atm_limit"}
    assert cli.main(["synth", "--list-langs", "--langs", "gb,pl"]) == 0
    assert capsys.readouterr().out == "en-GB en-gb-x-rp\npl-PL pl\n"


@pytest.mark.parametrize("args, message", [
    (["--langs", "en,xx", "--out", "o"], "unknown language 'xx'"),
    (["--langs", "en"], "--out DIR is required"),
    (["--out", "o", "--speaker-split", "0.6,x,0.2"], "--speaker-split '0.6,x,0.2' is not"),
    (["--out", "o", "--speakers-per-phrasing", "2,1"], "needs three counts"),
    (["--out", "o", "--intents", "balance,mortgage"], "unknown intent 'mortgage'"),
    (["--out", "o", "--phrasings", "0"], "phrasings per intent must be at least 1"),
    (["--out", "o", "--rate-range", "60,190"], "--rate-range '60,190' needs two speaking rates"),
    (["--out", "o", "--rate-range", "200,150"], "80 <= LO <= HI <= 450 words/min"),
    (["--out", "o", "--rate-range", "150"], "--rate-range '150' needs two"),
    (["--out", "o", "--rate-range", "130,fast"], "--rate-range '130,fast' is not a comma"),
    (["--out", "o", "--trim-silence", "-0.1"], "--trim-silence -0.1 must be the seconds"),
    (["--out", "o", "--trim-silence", "nan"], "--trim-silence nan must be"),
])
def test_cli_user_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["synth", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sprune synth: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_recipe_data_script_builds_combined_dirs(tmp_path, sprune_on_path):
    recipe = REPO_ROOT / "egs" / "mini_minds" / "ic1"
    env = dict(sprune_on_path, SPRUNE_VENV=str(tmp_path / "no-venv"))
    data = tmp_path / "data"
    command = ["local/data.sh", "--langs", "en,it", "--seed", "2", "--nj", "1", "--rate-range",
               "250,300", "--trim-silence", "0.1", "--synth-opts",
               "--intents balance,abroad --phrasings 1 --speakers 3 "
               "--speakers-per-phrasing 1,1,1 --quiet", str(data)]
    proc = subprocess.run(command, cwd=recipe, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for split in SPLITS:
        combined = DataDir.load(data / split)
        assert sorted(set(combined.utt2lang.values())) == ["en-US", "it-IT"]
        assert len(combined) == 4
        assert count_errors(validate_data_dir(data / split)) == 0
    assert (data / "local" / "synth_seed2" / "test_it-IT" / "wav.scp").is_file()
    pinned = json.loads((data / "local" / "synth_seed2" / "wav" / "it-IT" / "synth.json")
                        .read_text())
    assert (pinned["rate_range"], pinned["trim_silence"]) == ([250, 300], 0.1)
    bad = subprocess.run(["local/data.sh", "--langs", "en,klingon", str(data)], cwd=recipe,
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown language 'klingon'" in bad.stderr
