"""`validate_data_dir` and `sprune data validate`: every problem, with its file and line."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import kaldiio
import numpy as np
import soundfile

from sprune.data.audio import write_wav
from sprune.data.validate import WARNING, Problem, count_errors, validate_data_dir

REPO_ROOT = Path(__file__).resolve().parents[1]


def _tone(seconds: float = 0.1, rate: int = 16000) -> np.ndarray:
    return (0.3 * np.sin(np.arange(int(seconds * rate)) * 0.05)).astype(np.float32)


def make_bad_dir(root: Path) -> Path:
    """One data dir with every problem type the validator knows (see EXPECTED)."""
    audio = root / "audio"
    audio.mkdir(parents=True)
    good = audio / "good.wav"
    write_wav(good, _tone())
    (audio / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + bytes(range(200)))
    write_wav(audio / "8k.wav", _tone(rate=8000), rate=8000)
    soundfile.write(str(audio / "stereo.wav"), np.stack([_tone(), _tone()], axis=1), 16000)
    soundfile.write(str(audio / "empty.wav"), np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    with kaldiio.WriteHelper(f"ark,scp:{audio / 'a.ark'},{audio / 'a.scp'}") as writer:
        writer("a-u7", (16000, (_tone() * 32767).astype(np.int16)))
    ark_entry = (audio / "a.scp").read_text().split(maxsplit=1)[1].strip()

    d = root / "bad"
    d.mkdir()
    (d / "wav.scp").write_text(
        f"a-u1 {good}\n"                      # 1 fine
        f"a-u3 {audio / 'missing.wav'}\n"     # 2 missing audio
        f"a-u2 {audio / 'corrupt.wav'}\n"     # 3 unsorted, corrupt audio
        "\n"                                  # 4 empty line
        f"a-u4 {audio / '8k.wav'}\n"          # 5 8 kHz
        f"a-u5 {audio / 'stereo.wav'}\n"      # 6 two channels
        "a-u6\n"                              # 7 no value
        f"a-u6 {good}\n"                      # 8 duplicate id
        f"a-u7 {ark_entry}\n"                 # 9 fine: a kaldiio archive entry
        f"a-u8 {audio / 'empty.wav'}\n"       # 10 no samples
        f"b-u9 {good}\n")                     # 11 fine (its speaker prefix is a warning)
    (d / "utt2spk").write_text("a-u1 a\na-u2 a\na-u3 a\na-u4 a\na-u5 a b\na-u6 a\na-u7 a\n"
                               "a-u8 a\nb-u9 a\n")
    (d / "text").write_text("a-u1 hello world\na-u2\na-u3 x\na-u5 y\na-u6 y\na-u7 y\na-u8 y\n"
                            "b-u9 y\nzz-extra y\n")
    (d / "utt2lang").write_text("a-u1 en-US\na-u2 en-US\na-u3 en-US\na-u4 en-US\na-u5 en-US\n"
                                "a-u6 en-US\na-u7 en-US\nb-u9 en-US\n")
    (d / "utt2intent").write_bytes(b"a-u1 abroad\na-u2 abroad\na-u3 abroad\na-u4 abroad\n"
                                   b"a-u5 abroad\na-u6 abroad\na-u7 abroad\na-u8 abroad\n"
                                   b"b-u9 abroad\nb-zz \xff\xfe\n")
    (d / "spk2utt").write_text("a a-u1 a-u2 a-u3 a-u4 a-u6 a-u7 a-u7 ghost b-u9\nc a-u8\n")
    return d


# (file, line, words the message must contain); exactly these, nothing else.
EXPECTED = [
    ("wav.scp", 2, "does not exist"),
    ("wav.scp", 3, "not sorted: 'a-u2' comes after 'a-u3'"),
    ("wav.scp", 3, "cannot decode audio"),
    ("wav.scp", 4, "empty line"),
    ("wav.scp", 5, "sampled at 8000 Hz"),
    ("wav.scp", 6, "has 2 channels"),
    ("wav.scp", 7, "'a-u6' has no value"),
    ("wav.scp", 8, "duplicate id 'a-u6' (first at line 7)"),
    ("wav.scp", 10, "'a-u8' holds no samples"),
    ("text", 2, "empty transcript for 'a-u2'"),
    ("text", None, "no entry for utterance 'a-u4' (wav.scp line 5)"),
    ("text", 9, "utterance 'zz-extra' is not in wav.scp"),
    ("utt2spk", 5, "value 'a b' of 'a-u5' must be one token"),
    ("utt2spk", 5, "2 utterance id(s) do not start with their speaker id"),
    ("utt2lang", None, "no entry for utterance 'a-u8' (wav.scp line 10)"),
    ("utt2intent", 10, "not valid UTF-8"),
    ("spk2utt", 1, "utterance 'a-u7' is listed again"),
    ("spk2utt", 1, "utterance 'ghost' of speaker 'a' is not in utt2spk"),
    ("spk2utt", 2, "utterance 'a-u8' is under speaker 'c' but utt2spk says 'a'"),
    ("spk2utt", None, "no entry for utterance 'a-u5' (utt2spk line 5)"),
]


def _matches(problem: Problem, d: Path, file: str, line: int | None, words: str) -> bool:
    return problem.file == str(d / file) and problem.line == line and words in problem.message


def test_crafted_bad_dir_reports_every_problem_with_file_and_line(tmp_path):
    d = make_bad_dir(tmp_path)
    problems = validate_data_dir(d)
    for file, line, words in EXPECTED:
        hits = [p for p in problems if _matches(p, d, file, line, words)]
        assert len(hits) == 1, f"expected one '{file}:{line}: ...{words}...' in\n" + \
            "\n".join(map(str, problems))
    assert len(problems) == len(EXPECTED), "\n".join(map(str, problems))
    warnings = [p for p in problems if p.level == WARNING]
    assert [p.file for p in warnings] == [str(d / "utt2spk")]
    assert count_errors(problems) == len(EXPECTED) - 1


def test_no_audio_skips_only_the_audio_checks(tmp_path):
    d = make_bad_dir(tmp_path)
    problems = validate_data_dir(d, check_audio=False)
    audio_words = ("does not exist", "cannot decode", "Hz", "channels", "no samples")
    assert len(problems) == len([e for e in EXPECTED if not any(w in e[2] for w in audio_words)])
    assert not any(any(w in p.message for w in audio_words) for p in problems)


def test_problem_str_names_file_and_line():
    assert str(Problem("d/text", 3, "empty transcript")) == "d/text:3: empty transcript"
    assert str(Problem("d/wav.scp", None, "missing")) == "d/wav.scp: missing"
    assert str(Problem("d/utt2spk", 1, "prefix", level=WARNING)) == "d/utt2spk:1: warning: prefix"


def test_missing_required_files_and_dir(tmp_path):
    d = tmp_path / "only_text"
    d.mkdir()
    (d / "text").write_text("u1 hello\n")
    problems = validate_data_dir(d)
    assert [(p.file, p.line) for p in problems] == [(str(d / "wav.scp"), None),
                                                   (str(d / "utt2spk"), None)]
    assert all("required file is missing" in p.message for p in problems)
    gone = validate_data_dir(tmp_path / "nope")
    assert len(gone) == 1 and "does not exist" in gone[0].message


def test_utt2spk_is_the_reference_when_wav_scp_is_missing(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "utt2spk").write_text("s-u1 s\ns-u2 s\n")
    (d / "text").write_text("s-u1 hi\n")
    messages = [str(p) for p in validate_data_dir(d)]
    assert messages == [f"{d / 'wav.scp'}: required file is missing; a data dir needs wav.scp "
                        "and utt2spk",
                        f"{d / 'text'}: no entry for utterance 's-u2' (utt2spk line 2); add it or "
                        "remove the utterance"]


def test_clean_dirs_report_nothing(tmp_path, make_data_dir):
    d = make_data_dir(tmp_path, n_utts=8, langs=("en-US", "fr-FR"))
    assert validate_data_dir(d) == []
    bare = make_data_dir(tmp_path, n_utts=3, with_text=False, with_intent=False, name="bare")
    (bare / "spk2utt").unlink()  # spk2utt is derived; a dir without it is still valid
    assert validate_data_dir(bare) == []


def test_factory_can_make_wrong_rate_and_channels(tmp_path, make_data_dir):
    d = make_data_dir(tmp_path, n_utts=2, rate=22050, channels=2)
    messages = [p.message for p in validate_data_dir(d)]
    assert sum("22050 Hz" in m for m in messages) == 2
    assert sum("2 channels" in m for m in messages) == 2


def test_validating_many_files_is_fast(tmp_path, make_data_dir):
    d = make_data_dir(tmp_path, n_utts=400, seconds=0.05)
    start = time.perf_counter()
    assert validate_data_dir(d) == []
    assert time.perf_counter() - start < 5.0


def test_cli_prints_all_problems_and_exits_2_without_traceback(tmp_path, sprune_cli):
    bad = make_bad_dir(tmp_path)
    missing = tmp_path / "empty"
    missing.mkdir()
    proc = sprune_cli("data", "validate", bad, missing)
    assert proc.returncode == 2
    expected = [str(p) for p in validate_data_dir(bad) + validate_data_dir(missing)]
    assert proc.stdout.splitlines() == expected
    assert "Traceback" not in proc.stderr
    err_lines = proc.stderr.strip().splitlines()
    assert len(err_lines) == 1
    assert err_lines[0].startswith("sprune data: error: 21 problem(s), 1 warning(s) in 2 of 2")


def test_cli_clean_dir_exits_0_with_summary_and_progress_bar(tmp_path, make_data_dir, sprune_cli):
    d = make_data_dir(tmp_path, n_utts=250, seconds=0.02)
    proc = sprune_cli("data", "validate", d)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1 data dir(s) valid"
    assert "checking audio" in proc.stderr  # tqdm bar on stderr for > 200 utterances
    small = make_data_dir(tmp_path, n_utts=3, name="small")
    proc = sprune_cli("data", "validate", "--no-audio", small)
    assert proc.returncode == 0 and proc.stderr == ""


def test_validate_wrapper_script(tmp_path, make_data_dir, sprune_on_path):
    good = make_data_dir(tmp_path, n_utts=3)
    bad = make_bad_dir(tmp_path / "b")
    script = str(REPO_ROOT / "utils" / "validate_data_dir.sh")

    def run(*args):
        return subprocess.run(["bash", script, *map(str, args)], env=sprune_on_path,
                              capture_output=True, text=True, timeout=120)

    assert run(good).returncode == 0
    proc = run(bad)
    assert proc.returncode == 2 and "cannot decode audio" in proc.stdout
    proc = run("--check-audio", "false", bad)
    assert proc.returncode == 2 and "cannot decode audio" not in proc.stdout
    assert run("--check-audio", "no", bad).returncode == 2
    proc = run()
    assert proc.returncode == 2 and "Usage:" in proc.stderr
    assert run("--help").returncode == 0


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _one_utt_dir(root: Path, audio: Path) -> Path:
    d = root / f"d_{audio.stem}"
    d.mkdir()
    (d / "wav.scp").write_text(f"s-u1 {audio}\n")
    (d / "utt2spk").write_text("s-u1 s\n")
    return d


def test_truncated_wav_with_intact_header_is_an_error(tmp_path):
    """libsndfile shortens a cut WAV to the bytes present, so the header's data size decides."""
    wav = tmp_path / "cut.wav"
    soundfile.write(str(wav), _tone(1.0), 16000, subtype="PCM_16")
    d = _one_utt_dir(tmp_path, wav)
    assert validate_data_dir(d) == []
    _cut_in_half(wav)
    problems = validate_data_dir(d)
    assert len(problems) == 1, problems
    message = str(problems[0])
    assert message.startswith(f"{d / 'wav.scp'}:1: 's-u1': audio file {wav} is truncated")
    assert "declares 16000 frames" in message and "re-create or re-download" in message
    assert "\n" not in message


def test_truncated_flac_is_an_error(tmp_path):
    flac = tmp_path / "cut.flac"
    soundfile.write(str(flac), _tone(1.0), 16000)
    d = _one_utt_dir(tmp_path, flac)
    assert validate_data_dir(d) == []
    _cut_in_half(flac)
    problems = validate_data_dir(d)
    assert len(problems) == 1, problems
    assert f"audio file {flac} is truncated or corrupt" in problems[0].message
    assert "re-create or re-download" in problems[0].message


def test_wav_with_extra_chunks_and_streamed_size_is_not_truncated(tmp_path):
    """A LIST chunk before the data, an odd-sized chunk, and a streaming writer's 0xFFFFFFFF
    data size are all fine."""
    pcm = (_tone(0.1) * 32767).astype("<i2").tobytes()
    fmt = b"fmt " + (16).to_bytes(4, "little") + bytes.fromhex("01000100803e0000007d00000200") \
        + (16).to_bytes(2, "little")
    listing = b"LIST" + (5).to_bytes(4, "little") + b"INFOx\x00"  # odd size: one pad byte

    def riff(data_size: int) -> bytes:
        body = b"WAVE" + fmt + listing + b"data" + data_size.to_bytes(4, "little") + pcm
        return b"RIFF" + len(body).to_bytes(4, "little") + body

    ok = tmp_path / "chunks.wav"
    ok.write_bytes(riff(len(pcm)))
    streamed = tmp_path / "streamed.wav"
    streamed.write_bytes(riff(0xFFFFFFFF))
    for path in (ok, streamed):
        assert validate_data_dir(_one_utt_dir(tmp_path, path)) == [], path
    short = tmp_path / "short.wav"
    short.write_bytes(riff(len(pcm) + 2000))
    problems = validate_data_dir(_one_utt_dir(tmp_path, short))
    assert len(problems) == 1 and "declares 2600 frames but only 1600" in problems[0].message


def test_cli_truncated_wav_exits_2_with_one_line(tmp_path, sprune_cli):
    wav = tmp_path / "cut.wav"
    soundfile.write(str(wav), _tone(1.0), 16000, subtype="PCM_16")
    _cut_in_half(wav)
    d = _one_utt_dir(tmp_path, wav)
    proc = sprune_cli("data", "validate", d)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and str(wav) in lines[0] and "truncated" in lines[0]
    assert "re-create or re-download" in lines[0]
    assert len(proc.stderr.strip().splitlines()) == 1
