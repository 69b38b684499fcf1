"""`sprune speak`: a text file spoken by espeak-ng into speaker-disjoint Kaldi data dirs."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from sprune import cli
from sprune.data import espeak
from sprune.data.datadir import DataDir
from sprune.data.speak import (SPEAKER_POOLS, SPLITS, Line, plan_speakers, plan_utterances,
                               read_text, select_lines, speak_text)
from sprune.data.synth import VARIANTS
from sprune.data.validate import count_errors, validate_data_dir
from sprune.errors import UserError

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None and espeak._library_paths() is None,
    reason="espeak-ng is not installed (tools/install.sh installs it)")

# Normalised KJV-like lines as `sprune lm text` writes them, with their .ids; line 3 is long.
LINES = ["in the beginning god created the heaven and the earth",
         "and god said let there be light",
         "and the earth was without form and void and darkness was upon the face of the deep",
         "and god saw the light that it was good",
         "and god called the light day"]
IDS = ["Ge1:1", "Ge1:3", "Ge1:2", "Ge1:4", "Ge1:5"]
TINY = dict(split="test", n_speakers=2, max_lines=3, max_words=10, seed=2, progress=False)


def write_text(folder: Path, lines=LINES, ids=IDS) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    (folder / "t.ids").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return folder / "t.txt", folder / "t.ids"


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob("*.wav"))}


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> Path:
    """Lines 1, 2 and 4 (3 has 16 words) by two test speakers: 3 short utterances."""
    root = tmp_path_factory.mktemp("speak")
    text, ids = write_text(root / "kjv")
    report = speak_text(text, root / "asr_test", ids=ids, jobs=1, **TINY)
    assert (report.written, report.reused, report.too_long, report.spoken_lines) == (3, 0, 1, 3)
    return root


# --- planning (no audio) ---------------------------------------------------------------------

def test_speaker_pools_partition_the_variants_with_both_sexes_in_each():
    pools = [set(SPEAKER_POOLS[s]) for s in SPLITS]
    assert sum(len(p) for p in pools) == len(VARIANTS) == len(set().union(*pools))
    assert set().union(*pools) == set(VARIANTS)
    for pool in pools:
        assert any(v.startswith("m") and v[1:].isdigit() for v in pool)
        assert any(v.startswith("f") and v[1:].isdigit() for v in pool)


@pytest.mark.parametrize("seeds", [(0, 0, 0), (1, 2, 3), (7, 7, 1)])
def test_splits_never_share_a_speaker_or_a_voice_whatever_the_seeds_and_counts(seeds):
    speakers = {split: plan_speakers("en-US", "en-us", split, n, seed)
                for split, n, seed in zip(SPLITS, (40, 9, 12), seeds)}
    for split, spks in speakers.items():
        assert {s.voice.variant for s in spks} <= set(SPEAKER_POOLS[split])
        assert all(s.spk_id.startswith(f"en-US-{split}-s") and s.split == split for s in spks)
        assert len({(s.voice.variant, s.voice.rate, s.voice.pitch) for s in spks}) == len(spks)
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not {s.voice.variant for s in speakers[a]} & \
                    {s.voice.variant for s in speakers[b]}
                assert not {s.spk_id for s in speakers[a]} & {s.spk_id for s in speakers[b]}
    # up to the pool size every speaker has a variant of its own; speaker i does not depend
    # on how many are asked for (so a resumed run with more speakers keeps the first ones)
    six = plan_speakers("en-US", "en-us", "test", 6, 1)
    assert len({s.voice.variant for s in six}) == 6
    assert plan_speakers("en-US", "en-us", "test", 3, 1) == six[:3]
    assert plan_speakers("en-US", "en-us", "test", 3, 2) != six[:3]


def test_lines_are_shared_evenly_and_more_lines_keep_earlier_choices(tmp_path):
    speakers = plan_speakers("en-US", "en-us", "train", 4, 0)
    lines = [Line(i, f"L{i}", f"line {i}") for i in range(1, 11)]
    utts = plan_utterances(lines, speakers, 2, 0, tmp_path)
    assert len(utts) == 20
    by_line: dict[str, set[str]] = {}
    for u in utts:
        assert u.utt_id == f"{u.speaker.spk_id}-{u.utt_id.rsplit('-', 1)[1]}"
        assert u.wav_path == tmp_path / f"{u.utt_id}.wav" and u.intent is None
        by_line.setdefault(u.text, set()).add(u.speaker.spk_id)
    assert all(len(s) == 2 for s in by_line.values())  # two different speakers per line
    counts = np.unique([u.speaker.spk_id for u in utts], return_counts=True)[1]
    assert list(counts) == [5, 5, 5, 5]
    assert plan_utterances(lines[:6], speakers, 2, 0, tmp_path) == utts[:12]


def test_reading_and_selecting_lines(tmp_path):
    text, ids = write_text(tmp_path, lines=["a  b\tc", "", "d e f g", "h"], ids=["x", "", "y", "z"])
    lines = read_text(text, ids)
    assert [(l.number, l.line_id, l.text) for l in lines] == [
        (1, "x", "a b c"), (2, "", ""), (3, "y", "d e f g"), (4, "z", "h")]
    assert [l.line_id for l in read_text(text)] == ["1", "2", "3", "4"]  # default: line numbers
    chosen, empty, too_long = select_lines(lines, max_lines=2, max_words=3)
    assert [l.line_id for l in chosen] == ["x", "z"] and (empty, too_long) == (1, 1)
    chosen, empty, too_long = select_lines(lines, max_lines=1)
    assert [l.line_id for l in chosen] == ["x"] and (empty, too_long) == (0, 0)
    assert len(select_lines(lines)[0]) == 3


# --- speaking --------------------------------------------------------------------------------

def test_data_dir_is_valid_kaldi_with_the_lines_as_given(spoken):
    out = spoken / "asr_test"
    assert count_errors(validate_data_dir(out)) == 0
    assert not [p for p in validate_data_dir(out)]  # no warning either
    data = DataDir.load(out)
    assert sorted(p.name for p in out.iterdir()) == ["spk2utt", "text", "utt2lang", "utt2spk",
                                                     "wav.scp"]
    assert sorted(data.text.values()) == sorted([LINES[0], LINES[1], LINES[3]])
    assert set(data.utt2lang.values()) == {"en-US"}
    assert {u.rsplit("-", 1)[1] for u in data.utt_ids} == {"Ge1:1", "Ge1:3", "Ge1:4"}
    assert set(data.utt2spk.values()) == {"en-US-test-s01", "en-US-test-s02"}
    for utt, path in data.wav_scp.items():
        assert utt.startswith(data.utt2spk[utt] + "-")
        assert Path(path).is_absolute() and Path(path) == spoken / "wav" / "asr_test" / f"{utt}.wav"
        info = soundfile.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.duration > 1.0
    pinned = json.loads((spoken / "wav" / "asr_test" / "speak.json").read_text())
    assert pinned["split"] == "test" and pinned["seed"] == 2 and pinned["voice"] == "en-us"


def test_same_seed_is_byte_identical_with_a_pool(spoken, tmp_path):
    text, ids = write_text(tmp_path / "kjv")
    report = speak_text(text, tmp_path / "asr_test", ids=ids, jobs=2, **TINY)
    assert report.written == 3
    assert digests(tmp_path / "wav" / "asr_test") == digests(spoken / "wav" / "asr_test")
    for name in ("text", "utt2spk", "spk2utt", "utt2lang"):
        assert (tmp_path / "asr_test" / name).read_text() == \
            (spoken / "asr_test" / name).read_text()


def test_a_killed_run_resumes_and_other_inputs_are_refused(spoken, tmp_path):
    shutil.copytree(spoken, tmp_path, dirs_exist_ok=True)
    wavs = tmp_path / "wav" / "asr_test"
    before = digests(wavs)
    next(iter(sorted(wavs.glob("*.wav")))).unlink()
    shutil.rmtree(tmp_path / "asr_test")
    text, ids = tmp_path / "kjv" / "t.txt", tmp_path / "kjv" / "t.ids"
    report = speak_text(text, tmp_path / "asr_test", ids=ids, jobs=1, **TINY)
    assert (report.written, report.reused) == (1, 2)
    assert digests(wavs) == before
    assert count_errors(validate_data_dir(tmp_path / "asr_test")) == 0
    with pytest.raises(UserError, match=r"asr_test was spoken with other settings \(seed "
                                        r"differ\).*--wav-dir"):
        speak_text(text, tmp_path / "asr_test", ids=ids, jobs=1, **{**TINY, "seed": 3})
    write_text(tmp_path / "kjv", lines=[line + " amen" for line in LINES])
    with pytest.raises(UserError, match=r"\(text_sha256 differ\)"):
        speak_text(text, tmp_path / "asr_test", ids=ids, jobs=1, **TINY)
    assert digests(wavs) == before


def test_cli_speaks_a_train_split_disjoint_from_the_test_split(spoken, tmp_path, capsys):
    text, _ = write_text(tmp_path, lines=LINES[:2] + ["", "amen"])
    code = cli.main(["speak", "--split", "train", "--text", str(text), "--out",
                     str(tmp_path / "asr_train"), "--wav-dir", str(tmp_path / "w"),
                     "--speakers", "2", "--speakers-per-line", "1", "--max-lines", "2",
                     "--seed", "2", "--jobs", "1", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 of 4 lines spoken by 2 speakers" in out
    assert "2 utterances (2 spoken, 0 already there)" in out
    train = DataDir.load(tmp_path / "asr_train")
    test = DataDir.load(spoken / "asr_test")
    assert {u.rsplit("-", 1)[1] for u in train.utt_ids} == {"1", "2"}
    assert {Path(p).parent for p in train.wav_scp.values()} == {tmp_path / "w" / "asr_train"}
    assert not set(train.utt2spk.values()) & set(test.utt2spk.values())
    assert count_errors(validate_data_dir(tmp_path / "asr_train")) == 0


def test_help_documents_the_speaker_split(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["speak", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "speaker-disjoint splits:" in help_text and "examples:" in help_text
    assert "--split test" in help_text and "--speakers-per-line" in help_text


# --- bad input: one line, exit 2, nothing written --------------------------------------------

@pytest.mark.parametrize("args, setup, message", [
    (["--text", "missing.txt"], None, "missing.txt: no such file"),
    ([], "latin1", "t.txt:2: not UTF-8 text (byte 0xe9 at column 17)"),
    (["--ids", "t.ids"], "short_ids", "t.ids has 4 lines but t.txt has 5"),
    (["--ids", "t.ids"], "duplicate_ids", "t.ids:2: duplicate id 'Ge1:1'"),
    (["--ids", "missing.ids"], None, "--ids missing.ids: no such file"),
    (["--max-words", "3"], None, "no line is left to speak: all 5 non-empty lines have more "
                                 "than 3 words (the shortest has 6)"),
    (["--speakers", "2", "--speakers-per-line", "3"], None, "said by 3 speakers but there are "
                                                             "only 2"),
    (["--speakers", "4", "--max-lines", "3"], None, "4 speakers do not fit 3 lines x 1"),
    (["--speakers", "0"], None, "speakers must be at least 1 (got 0)"),
    (["--speakers-per-line", "7"], None, "said by 7 speakers but there are only 6"),
    (["--jobs", "0"], None, "jobs must be at least 1"),
    (["--lang", "xx-YY"], None, "no espeak-ng voice is known for language 'xx-YY'"),
    (["--voice", "nosuchvoice"], None, "nosuchvoice"),
    (["--wav-dir", "o"], None, "must not be inside one another"),
])
def test_user_errors_are_one_line_exit_2_and_write_nothing(tmp_path, monkeypatch, capsys, args,
                                                           setup, message):
    monkeypatch.chdir(tmp_path)
    write_text(tmp_path)
    if setup == "latin1":
        Path("t.txt").write_bytes("in the beginning\nand god said caf\xe9\n".encode("latin-1"))
    elif setup == "short_ids":
        Path("t.ids").write_text("".join(f"{i}\n" for i in IDS[:4]))
    elif setup == "duplicate_ids":
        Path("t.ids").write_text("".join(f"{i}\n" for i in ["Ge1:1", "Ge1:1", *IDS[2:]]))
    argv = ["speak", "--split", "test", "--text", "t.txt", "--out", "o", "--quiet", "--jobs",
            "1", *args]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sprune speak: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not Path("o").exists() and not Path("wav").exists()


def test_a_missing_split_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_text(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["speak", "--text", "t.txt", "--out", "o"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "the following arguments are required: --split" in err and err.count("\n") == 1
    assert not Path("o").exists()
