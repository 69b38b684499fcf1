"""DataDir read/write, kaldiio archive entries, subset/combine/filter (API, CLI and utils/)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from sprune.data.audio import audio_info, load_mono_16k, read_audio
from sprune.data.datadir import DataDir, read_mapping, read_table
from sprune.data.validate import validate_data_dir
from sprune.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang", "utt2intent")


def _files(d: Path) -> dict[str, str]:
    return {name: (d / name).read_text() for name in DATA_FILES if (d / name).exists()}


def test_round_trip_is_byte_identical(tmp_path, make_data_dir):
    src = make_data_dir(tmp_path, n_utts=7, langs=("en-US", "fr-FR", "de-DE"))
    data = DataDir.load(src)
    assert len(data) == 7 and data.path == src
    data.save(tmp_path / "copy")
    assert _files(tmp_path / "copy") == _files(src)
    assert DataDir.load(tmp_path / "copy") == data
    spk2utt = dict(line.split(maxsplit=1) for line in (src / "spk2utt").read_text().splitlines())
    assert spk2utt["en-US-spk0"] == "en-US-spk0-utt000 en-US-spk0-utt006"


def test_save_sorts_in_c_order_and_replaces_old_dir(tmp_path):
    # 'B' < 'a' < 'b' in byte order (locale-aware sorting would put 'a' first).
    data = DataDir(wav_scp={"b": "/x/b.wav", "B": "/x/B.wav", "a": "/x/a.wav"},
                   utt2spk={"b": "s", "B": "s", "a": "s"})
    out = tmp_path / "d"
    out.mkdir()
    (out / "stale_file").write_text("old")
    data.save(out)
    assert (out / "wav.scp").read_text() == "B /x/B.wav\na /x/a.wav\nb /x/b.wav\n"
    assert (out / "spk2utt").read_text() == "s B a b\n"
    assert not (out / "stale_file").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temp dirs left


def test_ark_entries_round_trip_and_decode(tmp_path):
    rate = 16000
    tones = {f"u{i}": (np.sin(np.arange(800 + 100 * i) * 0.1) * 10000).astype(np.int16)
             for i in range(3)}
    ark, scp = tmp_path / "wav.ark", tmp_path / "wav_ark.scp"
    with kaldiio.WriteHelper(f"ark,scp:{ark},{scp}") as writer:
        for utt, samples in tones.items():
            writer(utt, (rate, samples))
    d = tmp_path / "d"
    d.mkdir()
    (d / "wav.scp").write_text(scp.read_text())
    (d / "utt2spk").write_text("".join(f"{u} u\n" for u in tones))  # speaker "u" prefixes all
    data = DataDir.load(d)
    assert all(entry.startswith(f"{ark}:") for entry in data.wav_scp.values())
    data.save(tmp_path / "copy")
    assert (tmp_path / "copy" / "wav.scp").read_text() == (d / "wav.scp").read_text()
    for utt, samples in tones.items():
        wav, got_rate = read_audio(data.wav_scp[utt])
        assert got_rate == rate and wav.dtype == np.float32
        np.testing.assert_allclose(wav, samples / 32768.0, atol=1e-6)
        assert audio_info(data.wav_scp[utt]).frames == len(samples)
    assert validate_data_dir(d) == []


def test_save_ark_and_pipe_entries_validate(tmp_path, make_data_dir):
    src = make_data_dir(tmp_path, n_utts=2)
    data = DataDir.load(src)
    ark = tmp_path / "x.ark"
    kaldiio.save_ark(str(ark), {"utt": (16000, np.zeros(160, dtype=np.int16))},
                     scp=str(tmp_path / "x.scp"))
    first = data.utt_ids[0]
    data.wav_scp[first] = (tmp_path / "x.scp").read_text().split()[1]
    second = data.utt_ids[1]
    data.wav_scp[second] = f"cat {data.wav_scp[second]} |"
    data.save(tmp_path / "mixed")
    assert validate_data_dir(tmp_path / "mixed") == []
    assert load_mono_16k(data.wav_scp[second]).shape == (4000,)
    assert audio_info(data.wav_scp[first]).seconds == pytest.approx(0.01)


def test_audio_read_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_audio(str(tmp_path / "nope.wav"))
    with pytest.raises(UserError, match="archive of .* does not exist"):
        read_audio(f"{tmp_path / 'nope.ark'}:12")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(UserError, match="cannot decode audio"):
        audio_info(str(tmp_path / "junk.wav"))
    with pytest.raises(UserError, match="failed with exit code"):
        read_audio("false |")


def test_read_table_and_mapping(tmp_path):
    f = tmp_path / "text"
    f.write_text("u1  hello   world \n\nu2\n")
    assert read_table(f) == [(1, "u1", "hello   world"), (2, "", ""), (3, "u2", "")]
    with pytest.raises(UserError, match=r"text:2: empty line"):
        read_mapping(f)
    f.write_text("u1 a\nu1 b\n")
    with pytest.raises(UserError, match=r"text:2: duplicate id 'u1'"):
        read_mapping(f)


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "wav.scp").unlink(), r"wav.scp is missing"),
    (lambda d: (d / "utt2spk").unlink(), r"utt2spk is missing"),
    (lambda d: (d / "text").write_text((d / "text").read_text().split("\n", 1)[1]),
     r"text: no entry for utterance"),
    (lambda d: (d / "utt2lang").write_text((d / "utt2lang").read_text() + "zz en-US\n"),
     r"utt2lang: utterance 'zz' is not in wav.scp"),
    (lambda d: (d / "wav.scp").write_text((d / "wav.scp").read_text() * 2),
     r"wav.scp:4: duplicate id"),
])
def test_load_errors_name_the_file(tmp_path, make_data_dir, breakage, message):
    d = make_data_dir(tmp_path, n_utts=3)
    breakage(d)
    with pytest.raises(UserError, match=message):
        DataDir.load(d)


def test_load_missing_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        DataDir.load(tmp_path / "nope")


def test_subset_and_combine(tmp_path, make_data_dir):
    en = DataDir.load(make_data_dir(tmp_path, n_utts=4, langs=("en-US",), name="en"))
    fr = DataDir.load(make_data_dir(tmp_path, n_utts=3, langs=("fr-FR",), name="fr",
                                    with_intent=False))
    part = en.subset(en.utt_ids[:2])
    assert part.utt_ids == en.utt_ids[:2]
    assert set(part.text) == set(part.utt2spk) == set(part.utt2intent) == set(part.utt_ids)
    with pytest.raises(UserError, match="'ghost' is not in"):
        en.subset(["ghost"])
    both = DataDir.combine([en, fr])
    assert len(both) == 7 and both.utt2intent is None and len(both.text) == 7
    assert set(both.utt2lang.values()) == {"en-US", "fr-FR"}
    with pytest.raises(UserError, match="also in an earlier dir"):
        DataDir.combine([en, part])
    with pytest.raises(UserError, match="nothing to combine"):
        DataDir.combine([])


# --- the CLI ------------------------------------------------------------------------------

def _one_line_error(proc: subprocess.CompletedProcess, words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr, proc.stderr


def test_cli_subset(tmp_path, make_data_dir, sprune_cli):
    src = make_data_dir(tmp_path, n_utts=9, langs=("en-US", "fr-FR", "de-DE"))
    out = tmp_path / "out"
    proc = sprune_cli("data", "subset", src, out / "ende", "--langs", "en-US,de-DE")
    assert proc.returncode == 0, proc.stderr
    assert set(DataDir.load(out / "ende").utt2lang.values()) == {"en-US", "de-DE"}
    assert len(DataDir.load(out / "ende")) == 6

    assert sprune_cli("data", "subset", src, out / "first", "--first", "4").returncode == 0
    assert DataDir.load(out / "first").utt_ids == DataDir.load(src).utt_ids[:4]

    (tmp_path / "utts").write_text("fr-FR-spk0-utt001\n\nde-DE-spk1-utt005 extra fields\n")
    assert sprune_cli("data", "subset", src, out / "list", "--utt-list", tmp_path / "utts").returncode == 0
    assert DataDir.load(out / "list").utt_ids == ["de-DE-spk1-utt005", "fr-FR-spk0-utt001"]

    (tmp_path / "spks").write_text("en-US-spk1\n")
    assert sprune_cli("data", "subset", src, out / "spk", "--speakers", tmp_path / "spks").returncode == 0
    assert set(DataDir.load(out / "spk").utt2spk.values()) == {"en-US-spk1"}
    for d in out.iterdir():
        assert validate_data_dir(d) == []


def test_cli_subset_errors(tmp_path, make_data_dir, sprune_cli):
    src = make_data_dir(tmp_path, n_utts=4, langs=("en-US", "fr-FR"))
    dst = tmp_path / "dst"
    _one_line_error(sprune_cli("data", "subset", src, dst, "--langs", "it-IT"),
                    "has languages en-US, fr-FR")
    _one_line_error(sprune_cli("data", "subset", src, dst, "--first", "5"), "has 4 utterances")
    _one_line_error(sprune_cli("data", "subset", src, dst, "--utt-list", tmp_path / "none"),
                    "does not exist")
    (tmp_path / "spks").write_text("nobody\n")
    _one_line_error(sprune_cli("data", "subset", src, dst, "--speakers", tmp_path / "spks"),
                    "speaker 'nobody' is not in")
    _one_line_error(sprune_cli("data", "subset", src, dst, "--first", "1", "--langs", "en-US"),
                    "not allowed with argument")
    _one_line_error(sprune_cli("data", "subset", src, dst), "one of the arguments")
    nolang = tmp_path / "nolang"
    data = DataDir.load(src)
    data.subset(data.utt_ids[:2]).save(nolang)
    (nolang / "utt2lang").unlink()
    _one_line_error(sprune_cli("data", "subset", nolang, dst, "--langs", "en-US"),
                    "has no utt2lang")
    _one_line_error(sprune_cli("data", "subset", src, dst, "--first", "0"),
                    "give N between 1 and 4")
    assert not dst.exists()


def test_cli_combine(tmp_path, make_data_dir, sprune_cli):
    a = make_data_dir(tmp_path, n_utts=3, langs=("en-US",), name="a")
    b = make_data_dir(tmp_path, n_utts=2, langs=("fr-FR",), name="b", with_text=False)
    proc = sprune_cli("data", "combine", tmp_path / "ab", a, b)
    assert proc.returncode == 0, proc.stderr
    assert "note: text is not written" in proc.stdout
    ab = DataDir.load(tmp_path / "ab")
    assert len(ab) == 5 and ab.text is None and ab.utt2intent is not None
    assert validate_data_dir(tmp_path / "ab") == []
    _one_line_error(sprune_cli("data", "combine", tmp_path / "aa", a, a), "also in an earlier dir")
    assert not (tmp_path / "aa").exists()


def test_cli_filter_by_duration(tmp_path, make_data_dir, sprune_cli):
    src = make_data_dir(tmp_path, n_utts=6, seconds=(0.1, 0.3, 0.5))
    proc = sprune_cli("data", "filter", src, tmp_path / "mid", "--min-seconds", "0.2",
                      "--max-seconds", "0.4")
    assert proc.returncode == 0, proc.stderr
    kept = DataDir.load(tmp_path / "mid")
    assert len(kept) == 2
    assert all(audio_info(e).seconds == pytest.approx(0.3) for e in kept.wav_scp.values())
    assert sprune_cli("data", "filter", src, tmp_path / "long", "--min-seconds", "0.3").returncode == 0
    assert len(DataDir.load(tmp_path / "long")) == 4
    _one_line_error(sprune_cli("data", "filter", src, tmp_path / "none", "--min-seconds", "9"),
                    "selects no utterance")
    assert not (tmp_path / "none").exists()
    _one_line_error(sprune_cli("data", "filter", src, tmp_path / "x", "--min-seconds", "2",
                               "--max-seconds", "1"), "need 0 <= min <= max")
    Path(DataDir.load(src).wav_scp[DataDir.load(src).utt_ids[0]]).unlink()
    _one_line_error(sprune_cli("data", "filter", src, tmp_path / "x"), "run `sprune data validate")


def test_cli_info(tmp_path, make_data_dir, sprune_cli):
    src = make_data_dir(tmp_path, n_utts=6, langs=("en-US", "fr-FR"), seconds=0.5)
    proc = sprune_cli("data", "info", src)
    assert proc.returncode == 0, proc.stderr
    info = dict(line.split(":", 1) for line in proc.stdout.splitlines())
    assert info["utterances"].strip() == "6"
    assert info["speakers"].strip() == "4"
    assert info["languages"].strip() == "2 (en-US: 3, fr-FR: 3)"
    assert info["intents"].strip().startswith("5 (abroad: 2,")
    assert info["hours"].strip().startswith(f"{3.0 / 3600:.3f} (utterances of 0.50 to 0.50 s")
    proc = sprune_cli("data", "info", "--no-audio", src)
    assert proc.returncode == 0 and "hours" not in proc.stdout
    _one_line_error(sprune_cli("data", "info", tmp_path / "nope"), "does not exist")


# --- utils/ wrappers ----------------------------------------------------------------------

def _script(name: str, *args, env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO_ROOT / "utils" / name), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_utils_wrappers(tmp_path, make_data_dir, sprune_on_path):
    env = sprune_on_path
    src = make_data_dir(tmp_path, n_utts=6, langs=("en-US", "fr-FR"), seconds=(0.1, 0.1, 0.5))
    assert _script("subset_data_dir.sh", "--langs", "fr-FR", src, tmp_path / "fr", env=env).returncode == 0
    assert set(DataDir.load(tmp_path / "fr").utt2lang.values()) == {"fr-FR"}
    (tmp_path / "spk").write_text("en-US-spk0\n")
    assert _script("subset_data_dir.sh", "--spk-list", tmp_path / "spk", src, tmp_path / "s0",
                   env=env).returncode == 0
    assert set(DataDir.load(tmp_path / "s0").utt2spk.values()) == {"en-US-spk0"}
    assert _script("subset_data_dir.sh", "--first", "2", src, tmp_path / "f2", env=env).returncode == 0
    assert len(DataDir.load(tmp_path / "f2")) == 2
    proc = _script("subset_data_dir.sh", "--first", "2", "--langs", "fr-FR", src, tmp_path / "x", env=env)
    assert proc.returncode == 2 and "exactly one" in proc.stderr

    en = tmp_path / "en"
    assert _script("subset_data_dir.sh", "--langs", "en-US", src, en, env=env).returncode == 0
    assert _script("combine_data.sh", tmp_path / "all", en, tmp_path / "fr", env=env).returncode == 0
    assert _files(tmp_path / "all") == _files(src)

    assert _script("filter_data_dir.sh", "--max-seconds", "0.2", src, tmp_path / "short",
                   env=env).returncode == 0
    assert len(DataDir.load(tmp_path / "short")) == 4

    for name in ("subset_data_dir.sh", "combine_data.sh", "filter_data_dir.sh"):
        proc = _script(name, "--help", env=env)
        assert proc.returncode == 0 and proc.stdout.startswith("Usage:"), name
        assert _script(name, env=env).returncode == 2, name
        proc = _script(name, "--bogus", "1", src, tmp_path / "x", env=env)
        assert proc.returncode == 2 and "unknown option '--bogus'" in proc.stderr, name
