"""Shared pytest fixtures: tiny Kaldi data dirs with sine-wave audio, and running the CLI.

    def test_something(tmp_path, make_data_dir):
        data = make_data_dir(tmp_path, n_utts=6, langs=("en-US", "fr-FR"))

`make_data_dir` writes audio files under `<root>/audio/<name>/` (absolute paths in wav.scp,
so the current directory does not matter) and the dir itself at `<root>/<name>`, through
`DataDir.save`, so it is valid for `sprune data validate` unless told otherwise.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest

from sprune.data.audio import write_wav
from sprune.data.datadir import DataDir

REPO_ROOT = Path(__file__).resolve().parents[1]

# A few MINDS-14 intents, enough to vary the labels.
INTENTS = ("abroad", "balance", "card_issues", "freeze", "pay_bill")
WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def sine(seconds: float, rate: int, freq: float, channels: int = 1) -> np.ndarray:
    """A 0.5-amplitude sine: float32 [T] for mono, [T, C] otherwise."""
    t = np.arange(int(round(seconds * rate)), dtype=np.float32) / rate
    wav = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return wav if channels == 1 else np.stack([wav] * channels, axis=1)


def build_data_dir(root: str | Path, n_utts: int = 6, langs: Sequence[str] = ("en-US",),
                   rate: int = 16000, with_text: bool = True, with_intent: bool = True,
                   n_speakers: int = 2, seconds: float | Sequence[float] = 0.25,
                   name: str = "data", channels: int = 1) -> Path:
    """Write a data dir of `n_utts` utterances in total and return its path.

    Utterance i is in language `langs[i % len(langs)]`, spoken by one of `n_speakers`
    speakers per language (ids `<lang>-spk<j>`; utterance ids `<speaker>-utt<i:03d>`, so
    they carry their speaker prefix) and lasts `seconds` (a sequence is cycled). utt2lang is
    always written; text and utt2intent on request. `rate` and `channels` other than
    16000 / 1 make a dir that validation rejects.
    """
    root = Path(root)
    audio_dir = root / "audio" / name
    audio_dir.mkdir(parents=True, exist_ok=True)
    lengths = [seconds] if isinstance(seconds, (int, float)) else list(seconds)
    wav_scp, utt2spk, utt2lang, text, utt2intent = {}, {}, {}, {}, {}
    for i in range(n_utts):
        lang = langs[i % len(langs)]
        spk = f"{lang}-spk{(i // len(langs)) % n_speakers}"
        utt = f"{spk}-utt{i:03d}"
        wav_path = audio_dir / f"{utt}.wav"
        write_wav(wav_path, sine(lengths[i % len(lengths)], rate, 200.0 + 20 * i, channels), rate)
        wav_scp[utt] = str(wav_path)
        utt2spk[utt] = spk
        utt2lang[utt] = lang
        text[utt] = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3))
        utt2intent[utt] = INTENTS[i % len(INTENTS)]
    data = DataDir(wav_scp=wav_scp, utt2spk=utt2spk, utt2lang=utt2lang,
                   text=text if with_text else None,
                   utt2intent=utt2intent if with_intent else None)
    data.save(root / name)
    return root / name


@pytest.fixture
def make_data_dir() -> Callable[..., Path]:
    """The `build_data_dir` factory: `make_data_dir(tmp_path, n_utts=..., langs=..., ...)`."""
    return build_data_dir


def checkout_env(**extra: str) -> dict[str, str]:
    """os.environ with this checkout first on PYTHONPATH (works without `pip install -e`)."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_sprune(*args: str | Path, cwd: str | Path | None = None,
               input: str | None = None) -> subprocess.CompletedProcess:
    """Run `python -m sprune ARGS` in a subprocess; returns the completed process (text)."""
    return subprocess.run([sys.executable, "-m", "sprune", *map(str, args)], cwd=cwd, input=input,
                          env=checkout_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture
def sprune_cli() -> Callable[..., subprocess.CompletedProcess]:
    """Run the CLI in a subprocess: `sprune_cli("data", "validate", dir)`."""
    return run_sprune


@pytest.fixture
def cli(capsys) -> Callable[..., subprocess.CompletedProcess]:
    """Run `sprune ARGS` in-process (`sprune.cli.main`): the same code path as the command,
    without a torch import per call; returns a CompletedProcess with the captured output."""
    from sprune.cli import main

    def run(*args: str | Path) -> subprocess.CompletedProcess:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return run


@pytest.fixture
def sprune_on_path(tmp_path_factory) -> dict[str, str]:
    """An environment whose PATH has a `sprune` that runs this checkout with this Python,
    for testing the shell scripts in utils/ and egs/ without an installed entry point."""
    bin_dir = tmp_path_factory.mktemp("bin")
    shim = bin_dir / "sprune"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m sprune "$@"\n')
    shim.chmod(0o755)
    return checkout_env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.fixture
def one_torch_thread():
    """torch on one CPU thread for the test (tiny models run faster so, and the cores are
    shared); the previous count is restored. Use with `pytestmark =
    pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
