"""LM text: reading and bad input, splits, stats, the KJV and LibriSpeech LM corpora, the
BPE vocabulary (ESPnet ids) and sentence datasets.

The KJV reader is faked by a `bible` script on PATH (the real one is checked when Debian's
bible-kjv is installed); the LibriSpeech LM download runs against a local HTTP server.
"""
from __future__ import annotations

import functools
import gzip
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch

from sprune import cli
from sprune.errors import UserError
from sprune.lm import corpora
from sprune.lm.dataset import SentenceDataset, batches, collate_sentences
from sprune.lm.text import (normalize_lm_line, read_lines, split_indices, split_lines,
                            text_stats, write_splits)
from sprune.lm.vocab import SOS_EOS, LMVocab, check_vocab_matches

# 10 lines; after normalisation: (words, characters with spaces) counted by hand.
TEN = ["The cat sat.", "A dog ran!", "Birds, they sing", "FISH SWIM", "we eat bread",
       "you drink tea", "Is it late?", "no it's early", "one two three four", "go"]
HAND = {"the cat sat": (3, 11), "a dog ran": (3, 9), "birds they sing": (3, 15),
        "fish swim": (2, 9), "we eat bread": (3, 12), "you drink tea": (3, 13),
        "is it late": (3, 10), "no it's early": (3, 13), "one two three four": (4, 18),
        "go": (1, 2)}

FAKE_BIBLE = """\
Ge1:1 In the beginning God created the heaven and the earth.
Ge1:2 And the earth was without form, and void.
Ge2:1 Thus the heavens and the earth were finished.
1Sm1:1 Now there was a certain man of Ramathaimzophim.
1Sm1:2 And he had two wives;
Rev22:21 The grace of our Lord Jesus Christ be with you all. Amen.
"""


def lm(argv: list[str]) -> int:
    return cli.main(["lm", *argv])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def fake_bible(tmp_path: Path, monkeypatch, text: str = FAKE_BIBLE) -> Path:
    """Put a `bible` script printing `text` first on PATH."""
    folder = tmp_path / "fakebin"
    folder.mkdir()
    (folder / "verses.txt").write_text(text)
    script = folder / "bible"
    script.write_text(f"#!/bin/sh\ncat '{folder / 'verses.txt'}'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return script


# ----------------------------------------------------------------------------- reading

def test_read_lines_plain_gz_bom_and_line_ends(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfone\r\n\ntwo\n")
    assert read_lines(tmp_path / "a.txt") == ["one", "", "two"]
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write("caf\u00e9\nthree\nfour\n")
    assert read_lines(tmp_path / "b.txt.gz") == ["café", "three", "four"]
    assert read_lines(tmp_path / "b.txt.gz", max_lines=2) == ["café", "three"]


def test_read_lines_refuses_bad_input(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nab\xe9cd\n")
    with pytest.raises(UserError, match=r"bad.txt:2: not UTF-8 text \(byte 0xe9 at column 3\); "
                       r"convert it \(iconv -t UTF-8\)"):
        read_lines(bad)
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    with pytest.raises(UserError, match="blank.txt: no text"):
        read_lines(tmp_path / "blank.txt")
    with pytest.raises(UserError, match="missing.txt: no such file"):
        read_lines(tmp_path / "missing.txt")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(b"hello\n" * 100)[:30])
    with pytest.raises(UserError, match="cut.gz: broken gzip file"):
        read_lines(tmp_path / "cut.gz")


def test_non_utf8_text_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"one line\nanother\n\xff\xfe broken\n")
    out = tmp_path / "out"
    assert lm(["text", "--corpus", "file", "--source", str(bad), "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert f"{bad}:3: not UTF-8 text (byte 0xff at column 1)" in line and "iconv" in line
    assert not out.exists()
    out.mkdir()  # an existing --out stays empty too
    assert lm(["text", "--corpus", "file", "--source", str(bad), "--out", str(out)]) == 2
    one_error_line(capsys)
    assert list(out.iterdir()) == []


def test_empty_text_exits_2(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "punct.txt").write_text("...\n!?\n")
    for name, message in (("empty.txt", "no text"), ("punct.txt", "no text is left")):
        status = lm(["text", "--corpus", "file", "--source", str(tmp_path / name),
                     "--out", str(tmp_path / "out")])
        assert status == 2 and message in one_error_line(capsys)
    assert lm(["text", "--corpus", "file", "--out", str(tmp_path / "o")]) == 2
    assert "needs --source" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_normalize_lm_line_is_the_asr_normalisation():
    assert normalize_lm_line("AND HE SAID UNTO THEM'") == "and he said unto them"
    assert normalize_lm_line("Ge: Jacob's  sons, (all) of them!") == "ge jacob's sons all of them"


# ----------------------------------------------------------------------------- splits

def test_split_is_deterministic_disjoint_and_keeps_groups_whole():
    lines = [f"verse {c} {v} of chapter {c}" for c in range(200) for v in range(10)]
    groups = [f"ch{c}" for c in range(200) for _ in range(10)]
    a = split_indices(lines, 0.05, 0.05, seed=3, groups=groups)
    assert a == split_indices(lines, 0.05, 0.05, seed=3, groups=groups)
    assert a != split_indices(lines, 0.05, 0.05, seed=4, groups=groups)
    assert set(a["train"]) | set(a["dev"]) | set(a["test"]) == set(range(len(lines)))
    assert not (set(a["train"]) & set(a["dev"]) or set(a["train"]) & set(a["test"])
                or set(a["dev"]) & set(a["test"]))
    assert len(a["dev"]) == len(a["test"]) == 100                 # 5 % = 10 chapters of 10
    for part in a.values():
        assert part == sorted(part)                               # corpus order
    chapter_of = {name: {groups[i] for i in part} for name, part in a.items()}
    assert not chapter_of["train"] & (chapter_of["dev"] | chapter_of["test"])
    # counts instead of fractions; overshoot by at most one group
    b = split_indices(lines, 15, 25, seed=0, groups=groups)
    assert (len(b["dev"]), len(b["test"])) == (20, 30)
    # without groups: blocks of consecutive lines
    c = split_indices(lines, 0.1, 0.1, seed=0, block_lines=20)
    blocks = {i // 20 for i in c["test"]}
    assert len(c["test"]) == 200 and all(i in c["test"] for k in blocks
                                         for i in range(20 * k, 20 * k + 20))


def test_split_removes_held_out_sentences_from_train():
    # the formula opens every block of 10 lines, so every held-out block has a copy
    lines = ["and the lord spake unto moses saying" if i % 10 == 0 else f"line {i}"
             for i in range(1000)]
    parts = split_lines(lines, 0.1, 0.1, seed=0)
    text = {name: set(part) for name, part in parts.items()}
    assert not (text["train"] & text["dev"] or text["train"] & text["test"]
                or text["dev"] & text["test"])
    assert sum(map(len, parts.values())) < len(lines)             # repeats were removed
    with pytest.raises(UserError, match="no training text"):
        split_lines(lines[:10], 5, 5, seed=0)
    with pytest.raises(UserError, match="fraction"):
        split_lines(lines, 1.5, 0.1)


def test_stats_match_a_hand_count(tmp_path, capsys):
    src = tmp_path / "ten.txt"
    src.write_text("\n".join(TEN) + "\n\n")
    out = tmp_path / "lm"
    argv = ["text", "--corpus", "file", "--source", str(src), "--out", str(out),
            "--dev", "2", "--test", "2", "--quiet"]
    assert lm(argv) == 0
    stats = json.loads((out / "stats.json").read_text())
    seen = []
    for name in ("train", "dev", "test"):
        lines = (out / f"{name}.txt").read_text().splitlines()
        ids = (out / f"{name}.ids").read_text().splitlines()
        seen += lines
        assert [normalize_lm_line(TEN[int(i) - 1]) for i in ids] == lines
        assert stats[name] == {"lines": len(lines),
                               "words": sum(HAND[line][0] for line in lines),
                               "characters": sum(HAND[line][1] for line in lines)}
    assert sorted(seen) == sorted(HAND)
    assert (stats["dev"]["lines"], stats["test"]["lines"]) == (2, 2)
    assert stats["source"] == str(src) and stats["options"]["corpus"] == "file"
    assert stats["dropped"]["empty_after_normalisation"] == 1
    assert text_stats(["a bc", "d"]) == {"lines": 2, "words": 3, "characters": 5}
    # same options: skipped; other options or --force: made again
    capsys.readouterr()
    before = (out / "train.txt").stat().st_mtime_ns
    assert lm(argv) == 0 and "nothing to do" in capsys.readouterr().out
    assert (out / "train.txt").stat().st_mtime_ns == before
    assert lm([*argv[:-1], "--seed", "1"]) == 0 and "other options" in capsys.readouterr().out
    assert json.loads((out / "stats.json").read_text())["options"]["seed"] == 1
    assert lm([*argv[:-1], "--seed", "1", "--force"]) == 0
    assert "nothing to do" not in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_write_splits_files(tmp_path):
    stats = write_splits(tmp_path / "s", {"train": ["a b", "c"], "dev": ["d"], "test": []},
                         source="unit test", extra={"options": {"x": 1}})
    assert (tmp_path / "s" / "train.txt").read_text() == "a b\nc\n"
    assert (tmp_path / "s" / "test.txt").read_text() == ""
    assert stats == json.loads((tmp_path / "s" / "stats.json").read_text())
    assert stats["train"] == {"lines": 2, "words": 3, "characters": 4}
    assert stats["source"] == "unit test" and stats["options"] == {"x": 1}


# ----------------------------------------------------------------------------- corpora

def test_kjv_reader_parses_a_fake_bible(tmp_path, monkeypatch, capsys):
    fake_bible(tmp_path, monkeypatch)
    verses = corpora.kjv_verses()
    assert [v.ref for v in verses] == ["Ge1:1", "Ge1:2", "Ge2:1", "1Sm1:1", "1Sm1:2",
                                       "Rev22:21"]
    assert [v.chapter_ref for v in verses][3:5] == ["1Sm1", "1Sm1"]
    assert corpora.kjv_lines()[0] == "In the beginning God created the heaven and the earth."
    out = tmp_path / "kjv"
    assert lm(["text", "--corpus", "kjv", "--out", str(out), "--dev", "1", "--test", "1",
               "--quiet"]) == 0
    ids = {name: (out / f"{name}.ids").read_text().split() for name in ("train", "dev", "test")}
    assert sorted(sum(ids.values(), [])) == sorted(v.ref for v in verses)
    for name in ("dev", "test"):                      # whole chapters are held out
        chapters = {ref.split(":")[0] for ref in ids[name]}
        assert all(ref.split(":")[0] not in chapters for ref in ids["train"])
    assert (out / "train.txt").read_text().islower()


def test_kjv_reader_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"needs Debian's bible-kjv \(apt-get install bible-kjv "
                       r"bible-kjv-text\)"):
        corpora.kjv_verses(str(tmp_path / "no-such-bible"))
    fake_bible(tmp_path, monkeypatch, "Genesis 1\n\n  1 In the beginning\n")
    with pytest.raises(UserError, match="output line 1 is not 'Book1:1 text'"):
        corpora.kjv_verses()


@pytest.mark.skipif(shutil.which("bible") is None, reason="Debian's bible-kjv is not installed")
def test_real_kjv_has_31102_verses():
    verses = corpora.kjv_verses()
    assert len(verses) == corpora.KJV_VERSES == 31102
    assert verses[0].ref == "Ge1:1" and verses[-1].ref == "Rev22:21"
    assert len({v.chapter_ref for v in verses}) == 1189
    parts = split_indices([normalize_lm_line(v.text) for v in verses], 0.02, 0.02, 0,
                          groups=[v.chapter_ref for v in verses])
    assert 600 <= len(parts["test"]) <= 800 and 600 <= len(parts["dev"]) <= 800


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server over tmp_path/www; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = type("Quiet", (http.server.SimpleHTTPRequestHandler,),
                   {"log_message": lambda *args: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_librispeech_lm_download_from_a_local_url(http_root, tmp_path, capsys):
    www, base = http_root
    sentences = [f"CHAPTER {i} THE BOY'S DOG RAN HOME" for i in range(300)]
    with gzip.open(www / corpora.LIBRISPEECH_LM_FILE, "wt", encoding="utf-8") as f:
        f.write("\n".join(sentences) + "\n")
    url = f"{base}/{corpora.LIBRISPEECH_LM_FILE}"
    cache = tmp_path / "cache"
    assert corpora.librispeech_lm_lines(url, cache, max_lines=5) == sentences[:5]
    assert (cache / corpora.LIBRISPEECH_LM_FILE).is_file()
    assert not list(cache.glob("*.part"))
    (www / corpora.LIBRISPEECH_LM_FILE).unlink()  # the cached copy is used from now on
    assert corpora.librispeech_lm_lines(url, cache) == sentences
    assert corpora.librispeech_lm_lines(cache, tmp_path / "x", max_lines=1) == sentences[:1]
    with pytest.raises(UserError, match="cannot download"):
        corpora.librispeech_lm_lines(f"{base}/other.txt.gz", cache)
    out = tmp_path / "lm"
    assert lm(["text", "--corpus", "librispeech", "--source", url, "--out", str(out),
               "--download-dir", str(cache), "--dev", "0.1", "--test", "0.1", "--quiet"]) == 0
    train = (out / "train.txt").read_text().splitlines()
    assert len(train) == 240 and all(line in {normalize_lm_line(s) for s in sentences}
                                     for line in train)
    assert train[-1] == normalize_lm_line(sentences[int((out / "train.ids").read_text()
                                                        .split()[-1]) - 1])
    assert json.loads((out / "stats.json").read_text())["test"]["lines"] == 30


# ----------------------------------------------------------------------------- vocabulary

@pytest.fixture(scope="module")
def vocab() -> LMVocab:
    return LMVocab.train(["the cat sat on the mat", "a dog ate the hat", "cats and dogs",
                          "the mat is flat and the hat is black"] * 5, vocab_size=40)


def test_vocab_ids_follow_espnet(vocab, tmp_path):
    tokens = vocab.token_list
    assert vocab.vocab_size == len(tokens) == 40
    assert tokens[0] == "<blank>" and tokens[1] == "<unk>" and tokens[-1] == SOS_EOS
    assert (vocab.blank, vocab.unk, vocab.sos_eos) == (0, 1, 39)
    assert tokens[2:-1] == [vocab.tokenizer.sp.id_to_piece(i) for i in range(2, 39)]
    ids = vocab.encode("The CAT sat!")
    assert 0 not in ids and vocab.sos_eos not in ids and vocab.decode(ids) == "the cat sat"
    assert vocab.decode([vocab.sos_eos, *ids, vocab.sos_eos, 0]) == "the cat sat"
    vocab.save(tmp_path / "bpe.model")
    vocab.write_token_list(tmp_path / "tokens.txt")
    again = LMVocab.load(tmp_path / "bpe.model")
    assert again.token_list == tokens and again.encode("cats and dogs") == vocab.encode(
        "cats and dogs")
    assert (tmp_path / "tokens.txt").read_text().splitlines() == tokens


def test_unseen_characters_become_unk(vocab):
    ids = vocab.encode("the zebra sat")                   # z and r never occur in training
    assert ids.count(vocab.unk) >= 1 and vocab.unk not in vocab.encode("the cat")
    data = SentenceDataset(["the cat", "a zebra", "quiz"], vocab)
    assert data.unk_count == vocab.encode("a zebra").count(1) + vocab.encode("quiz").count(1)


def test_vocab_errors(vocab, tmp_path):
    vocab.save(tmp_path / "bpe.model")
    with pytest.raises(UserError, match=r"BPE model .*bpe.model has 40 tokens but the LM in "
                       r"exp/lm was trained with 50; use the BPE model the LM was trained with"):
        check_vocab_matches(LMVocab.load(tmp_path / "bpe.model"), 50, "exp/lm")
    check_vocab_matches(vocab, 40, "exp/lm")
    with pytest.raises(UserError, match="too small .* at least 15"):  # 11 letters + 4
        LMVocab.train(["the cat sat on the mat", "a dog ate"], vocab_size=10)
    with pytest.raises(UserError, match="too large"):
        LMVocab.train(["ab ba"], vocab_size=500)
    with pytest.raises(UserError, match="no LM training text"):
        LMVocab.train(["", "..."], vocab_size=10)
    with pytest.raises(UserError, match="does not exist"):
        LMVocab.load(tmp_path / "none.model")
    (tmp_path / "junk.model").write_bytes(b"\x00junk")
    with pytest.raises(UserError, match="not a sentencepiece model"):
        LMVocab.load(tmp_path / "junk.model")


def test_bpe_cli_writes_model_and_token_list(tmp_path, capsys):
    text = tmp_path / "train.txt"
    text.write_text("\n".join(["the cat sat on the mat", "a dog ate the hat"] * 10) + "\n")
    model = tmp_path / "lm" / "bpe.model"
    assert lm(["bpe", "--text", str(text), "--vocab-size", "25", "--out", str(model),
               "--quiet"]) == 0
    tokens = (tmp_path / "lm" / "tokens.txt").read_text().splitlines()
    assert tokens == LMVocab.load(model).token_list and len(tokens) == 25
    assert lm(["bpe", "--text", str(text), "--vocab-size", "5", "--out",
               str(tmp_path / "small.model")]) == 2
    assert "raise --vocab-size" in one_error_line(capsys)
    assert not (tmp_path / "small.model").exists()


# ----------------------------------------------------------------------------- dataset

def test_dataset_and_collate_on_a_hand_example(vocab):
    cat, dog = vocab.encode("the cat"), vocab.encode("a dog ate the hat")
    s = vocab.sos_eos
    data = SentenceDataset(["The cat.", "", "a dog ate the hat"], vocab)
    assert len(data) == 2 and data.empty_lines == 1
    assert data[0].tolist() == [s, *cat, s] and data[0].dtype == torch.long
    assert data.lengths() == [len(cat) + 2, len(dog) + 2]
    assert data.num_tokens() == len(cat) + 1 + len(dog) + 1
    batch = collate_sentences([data[0], data[1]])
    assert batch["tokens"].shape == (2, len(dog) + 2) and batch["tokens"].dtype == torch.long
    assert batch["lengths"].tolist() == [len(cat) + 2, len(dog) + 2]
    assert batch["tokens"][0].tolist() == [s, *cat, s] + [0] * (len(dog) - len(cat))
    assert batches(data, 1) == [[1], [0]] and batches(data, 5) == [[1, 0]]


def test_long_sentences_are_cut_into_overlapping_windows(vocab):
    whole = SentenceDataset(["a dog ate the hat and the cat sat on the mat"], vocab)
    seq = whole[0].tolist()
    cut = SentenceDataset(["a dog ate the hat and the cat sat on the mat"], vocab, max_len=4)
    windows = [cut[i].tolist() for i in range(len(cut))]
    assert all(2 <= len(w) <= 4 for w in windows)
    assert windows[0] == seq[:4] and windows[1][0] == windows[0][-1]   # one token overlap
    assert [t for w in windows for t in w[1:]] == seq[1:]               # each predicted once
    assert cut.num_tokens() == whole.num_tokens() == len(seq) - 1
