"""Reading and writing audio for data dirs.

Policy: every data dir holds 16 kHz mono audio. Prep and synthesis code resample when they
write (`resample`), and `sprune data validate` rejects any other rate or channel count, so
training never resamples silently. Audio is read with soundfile (torchaudio.load needs
torchcodec + FFmpeg, which are not part of the stack), Kaldi archives with kaldiio.
"""
from __future__ import annotations

import io
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import soundfile

from sprune.errors import UserError

SAMPLE_RATE = 16000

_ARK_ENTRY = re.compile(r"^(?P<file>.+\.ark):(?P<offset>\d+)$")


def entry_kind(entry: str) -> str:
    """Classify a wav.scp value: 'pipe' (`cmd ... |`), 'ark' (`file.ark:offset`) or 'file'."""
    entry = entry.strip()
    if entry.endswith("|"):
        return "pipe"
    if _ARK_ENTRY.match(entry):
        return "ark"
    return "file"


def read_audio(entry: str) -> tuple[np.ndarray, int]:
    """Read one wav.scp value. Returns (samples, sample rate).

    samples: float32, shape [T] for mono or [T, C] for C channels, in [-1, 1].
    Raises `UserError` if the file is missing or cannot be decoded.
    """
    kind = entry_kind(entry)
    try:
        if kind == "pipe":
            proc = subprocess.run(entry.strip()[:-1], shell=True, capture_output=True, check=True)
            wav, rate = soundfile.read(io.BytesIO(proc.stdout), dtype="float32")
        elif kind == "ark":
            import kaldiio

            if not os.path.isfile(_ARK_ENTRY.match(entry.strip())["file"]):
                raise UserError(f"archive of '{entry}' does not exist")
            loaded = kaldiio.load_mat(entry.strip())
            if not isinstance(loaded, tuple):
                raise UserError(f"'{entry}' holds a matrix, not audio; wav.scp must point at audio")
            rate, wav = loaded
            wav = np.asarray(wav)
            if np.issubdtype(wav.dtype, np.integer):
                wav = wav.astype(np.float32) / 32768.0
            wav = wav.astype(np.float32)
        else:
            if not os.path.isfile(entry):
                raise UserError(f"audio file {entry} does not exist")
            wav, rate = soundfile.read(entry, dtype="float32")
    except UserError:
        raise
    except subprocess.CalledProcessError as err:
        raise UserError(f"command '{entry}' failed with exit code {err.returncode}") from None
    except Exception as err:  # soundfile/kaldiio raise many types for corrupt data
        raise UserError(f"cannot decode audio '{entry}': {str(err).splitlines()[0]}") from None
    return wav, int(rate)


@dataclass(frozen=True)
class AudioInfo:
    """What a wav.scp entry holds, read from its header where the format allows it."""

    rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.rate if self.rate > 0 else 0.0


def audio_info(entry: str) -> AudioInfo:
    """Rate, channel count and length of one wav.scp value.

    Plain files are only opened for their header (soundfile.info), so this is cheap for long
    recordings; archive entries and pipes have to be decoded. Raises `UserError` like
    `read_audio` for a missing or undecodable entry.
    """
    if entry_kind(entry) != "file":
        wav, rate = read_audio(entry)
        return AudioInfo(rate=rate, channels=1 if wav.ndim == 1 else wav.shape[1],
                         frames=wav.shape[0])
    if not os.path.isfile(entry):
        where = "" if os.path.isabs(entry) else f" (relative paths start from {os.getcwd()})"
        raise UserError(f"audio file {entry} does not exist{where}")
    try:
        info = soundfile.info(entry)
    except Exception as err:  # libsndfile reports corrupt headers with several types
        raise UserError(f"cannot decode audio '{entry}': {str(err).splitlines()[0]}") from None
    return AudioInfo(rate=int(info.samplerate), channels=int(info.channels), frames=int(info.frames))


def load_mono_16k(entry: str) -> np.ndarray:
    """Read one wav.scp value as 16 kHz mono float32 [T]; anything else is a `UserError`."""
    wav, rate = read_audio(entry)
    if rate != SAMPLE_RATE:
        raise UserError(f"'{entry}' is sampled at {rate} Hz; data dirs must be 16 kHz "
                        "(resample when preparing the data)")
    if wav.ndim != 1:
        raise UserError(f"'{entry}' has {wav.shape[1]} channels; data dirs must be mono")
    return wav


def resample(wav: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (torchaudio's sinc interpolation). wav: [T] -> [T']."""
    if rate_in == rate_out:
        return wav.astype(np.float32)
    import torch
    import torchaudio.functional as F

    out = F.resample(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), rate_in, rate_out)
    return out.numpy()


def write_wav(path: str | os.PathLike, wav: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write float samples [T] as 16-bit PCM WAV (clipped to [-1, 1])."""
    soundfile.write(str(path), np.clip(wav, -1.0, 1.0), rate, subtype="PCM_16")


def load_resampled(entry: str) -> np.ndarray:
    """Any audio soundfile reads (WAV, FLAC, MP3, ...) as 16 kHz mono float32 [T]: channels
    averaged, then resampled."""
    wav, rate = read_audio(entry)
    if wav.ndim == 2:
        wav = wav.mean(axis=1)
    return resample(wav, rate, SAMPLE_RATE)


def convert_audio_dir(sources: Mapping[str, str | os.PathLike], audio_dir: str | os.PathLike,
                      log: Callable[[str], None] = print, what: str = "recordings"
                      ) -> dict[str, Path]:
    """Write each source (utt id -> audio file) as `<audio_dir>/<utt>.wav`, 16 kHz mono 16-bit,
    for corpora whose audio is not: prep converts once, training never resamples.

    The folder is written atomically with a MANIFEST of its utterance ids and reused as is
    when that manifest matches. Returns utt id -> absolute wav path.
    """
    from sprune.io import atomic_dir

    audio_dir = Path(audio_dir)
    paths = {utt: (audio_dir / f"{utt}.wav").resolve() for utt in sources}
    manifest = "".join(f"{utt}\n" for utt in sorted(paths))
    if (audio_dir / "MANIFEST").is_file() and (audio_dir / "MANIFEST").read_text() == manifest:
        log(f"reusing {len(paths)} converted {what} in {audio_dir}")
        return paths
    with atomic_dir(audio_dir) as tmp:
        for count, (utt, source) in enumerate(sources.items(), start=1):
            write_wav(tmp / f"{utt}.wav", load_resampled(str(source)))
            if count % 200 == 0 or count == len(sources):
                log(f"  {audio_dir.name}: converted {count}/{len(sources)} {what} to 16 kHz WAV")
        (tmp / "MANIFEST").write_text(manifest)
    return paths
