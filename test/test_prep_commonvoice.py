"""Common Voice prep (`sprune prep commonvoice`) on a tiny release laid out like the real one:
<root>/<locale>/{train,dev,test}.tsv (header, tab-separated, unquoted) + clips/*.mp3 at 48 kHz."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from sprune.data.commonvoice import limit_hours, prepare_commonvoice, read_split
from sprune.data.datadir import DataDir
from sprune.data.validate import count_errors, validate_data_dir
from sprune.errors import UserError

HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment"
SENTENCES = ("de kat zit op de mat", "het regent vandaag", "ik heb een rekening",
             "waar is mijn kaart", "betaal de rekening", "hoe laat is het")


def write_release(root: Path, locale: str = "nl", per_split: int = 3, seconds: float = 1.0,
                  rate: int = 48000) -> Path:
    """A Common Voice locale folder with `per_split` clips per split (two speakers each);
    the last training row has an empty sentence and a `"` sits unquoted in a dev sentence."""
    folder = root / locale
    (folder / "clips").mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = 0
    for split in ("train", "dev", "test"):
        rows = [HEADER]
        for i in range(per_split):
            name = f"common_voice_{locale}_{1000 + n}.mp3"
            t = np.arange(int(seconds * rate)) / rate
            wav = 0.3 * np.sin(2 * np.pi * (150 + 40 * n) * t) + 0.01 * rng.standard_normal(t.size)
            soundfile.write(folder / "clips" / name, wav.astype(np.float32), rate, format="MP3")
            client = f"{split}{i % 2:02d}" + "ab" * 40
            sentence = SENTENCES[n % len(SENTENCES)]
            if split == "dev" and i == 0:
                sentence = 'hij zei "hallo"'
            rows.append(f"{client}\t{name}\t{sentence}\t2\t0\t\t\t\t{locale}\t")
            n += 1
        if split == "train":
            rows.append(f"{'ff' * 40}\tcommon_voice_{locale}_9999.mp3\t\t2\t0\t\t\t\t{locale}\t")
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_release(tmp_path_factory.mktemp("cv"))


def test_prepare_writes_valid_16k_dirs(release, tmp_path):
    written = prepare_commonvoice(release, tmp_path / "data", "nl", log=lambda m: None)
    assert set(written) == {"train", "dev", "test"}
    for split, path in written.items():
        assert path == tmp_path / "data" / "nl" / split
        assert count_errors(validate_data_dir(path)) == 0
        data = DataDir.load(path)
        assert len(data) == 3                      # the empty-sentence row is dropped
        assert set(data.utt2lang.values()) == {"nl"}
        for utt, spk in data.utt2spk.items():
            assert utt.startswith(spk + "-") and spk.startswith("nl-") and len(spk) == 19
        wav, rate = soundfile.read(next(iter(data.wav_scp.values())))
        assert rate == 16000 and wav.ndim == 1 and abs(len(wav) - 16000) < 1600
    dev = DataDir.load(written["dev"])
    assert 'hij zei "hallo"' in dev.text.values()
    assert len(set(DataDir.load(written["train"]).utt2spk.values())) == 2
    # a re-run reuses the converted audio
    messages = []
    prepare_commonvoice(release, tmp_path / "data", "nl", splits=("test",), log=messages.append)
    assert any("reusing 3 converted clips" in m for m in messages)


def test_train_hours_keeps_a_seeded_subset(release):
    clips, dropped = read_split(release / "nl", "train", "nl")
    assert len(clips) == 3 and dropped == 1
    kept = limit_hours(clips, 2.5 / 3600, seed=0)       # room for two 1-second clips
    assert len(kept) == 2 and kept == limit_hours(clips, 2.5 / 3600, seed=0)
    assert [c.utt_id for c in kept] == [c.utt_id for c in clips if c in kept]   # input order
    with pytest.raises(UserError, match="--train-hours must be positive"):
        limit_hours(clips, 0)


@pytest.mark.parametrize("damage, message", [
    ("locale", "does not exist (locales there: nl)"),
    ("column", "no column sentence in the header"),
    ("clip", "clip"),
    ("tsv", "test.tsv is missing"),
])
def test_bad_release_is_one_line_exit_2(release, tmp_path, cli, damage, message):
    import shutil

    root = tmp_path / "release"
    shutil.copytree(release, root)
    locale = "nl"
    if damage == "locale":
        locale = "fy-NL"
    elif damage == "column":
        tsv = root / "nl" / "train.tsv"
        tsv.write_text(tsv.read_text().replace("\tsentence\t", "\ttext\t", 1))
    elif damage == "clip":
        (root / "nl" / "clips" / "common_voice_nl_1000.mp3").unlink()
        message = "train.tsv:2: clip"
    else:
        (root / "nl" / "test.tsv").unlink()
    done = cli("prep", "commonvoice", "--root", root, "--langs", locale, "--out", tmp_path / "d")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d" / "nl" / "test").exists()
