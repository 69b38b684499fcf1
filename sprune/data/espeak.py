"""Speech and phonemes from espeak-ng.

Two backends behind the same functions:

* ``binary``: the ``espeak-ng`` program (Debian package ``espeak-ng``), used when it is on PATH;
* ``library``: the shared library and voice data shipped by the pip package
  ``espeakng-loader``, driven through ctypes (the installer's fallback when it cannot install
  the Debian package).

The environment variable ``SPRUNE_ESPEAK`` (``binary`` or ``library``) forces one. Both speak
with a voice (``en-us``), an optional variant (``m3``, ``f2``, ``klatt``: see
``espeak-ng --voices=variant``), a rate in words per minute and a pitch in 0-99. The two may
differ in version, so audio is reproducible for one backend, not across them.
"""
from __future__ import annotations

import _ctypes
import contextlib
import ctypes
import functools
import io
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import soundfile

from sprune.errors import UserError

BACKENDS = ("binary", "library")
_INSTALL_HINT = ("run tools/install.sh (it installs the Debian package espeak-ng, or the pip "
                 "package espeakng-loader when it cannot)")


@dataclass(frozen=True)
class Voice:
    """How espeak-ng speaks: voice name, optional variant, rate (words/min) and pitch (0-99)."""

    name: str
    variant: str | None = None
    rate: int = 175
    pitch: int = 50

    def __post_init__(self) -> None:
        if not 80 <= self.rate <= 450:
            raise UserError(f"espeak-ng rate {self.rate} is out of range; use 80-450 words/min")
        if not 0 <= self.pitch <= 99:
            raise UserError(f"espeak-ng pitch {self.pitch} is out of range; use 0-99")

    @property
    def spec(self) -> str:
        """The voice as espeak-ng names it, e.g. 'en-us+m3'."""
        return f"{self.name}+{self.variant}" if self.variant else self.name


def synthesize(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    """Speak `text`. Returns (float32 samples [T] in [-1, 1], sample rate; 22050 for espeak-ng)."""
    if not text.strip():
        raise UserError("espeak-ng was given an empty sentence; every transcript needs words")
    return _backend().synthesize(text, voice)


def phonemize(text: str, voice: str) -> str:
    """IPA phonemes of `text` as spoken by `voice` (e.g. 'fr'), words separated by spaces.

    Stress marks (ˈ ˌ) and length marks are kept; espeak's clause breaks and word-linking
    hyphens are not phonemes and are dropped.
    """
    raw = _backend().phonemes(text, voice)
    return " ".join(raw.replace("-", " ").replace("_", " ").split())


def backend_name() -> str:
    """Which backend and version speak here, e.g. 'binary espeak-ng 1.51'."""
    backend = _backend()
    return f"{backend.kind} {backend.version}"


class _Binary:
    """The espeak-ng program: text on stdin, a WAV on stdout."""

    kind = "binary"

    def __init__(self, exe: str) -> None:
        self.exe = exe
        # "eSpeak NG text-to-speech: 1.51  Data at: ..." -> "espeak-ng 1.51"
        out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
        words = out.split("text-to-speech:")[-1].split()
        self.version = f"espeak-ng {words[0] if words else 'unknown'}"

    def _run(self, args: list[str], text: str, allow_empty: bool = False) -> bytes:
        proc = subprocess.run([self.exe, "-b", "1", *args], input=text.encode("utf-8"),
                              capture_output=True)
        if proc.returncode != 0 or not (proc.stdout or allow_empty):
            lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = lines[-1].rstrip(".") if lines else f"exit code {proc.returncode}"
            raise UserError(f"espeak-ng {' '.join(args)} failed ({reason}); "
                            "check the voice name with `espeak-ng --voices`")
        return proc.stdout

    def synthesize(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        wav_bytes = self._run(["-v", voice.spec, "-s", str(voice.rate), "-p", str(voice.pitch),
                               "--stdout"], text)
        # espeak-ng streams its WAV with a placeholder length; libsndfile reads up to EOF.
        wav, rate = soundfile.read(io.BytesIO(wav_bytes), dtype="float32")
        return wav, int(rate)

    def phonemes(self, text: str, voice: str) -> str:
        # Punctuation alone has no phonemes: empty output is an answer, not an error.
        return self._run(["-q", "-x", "--ipa", "-v", voice], text, allow_empty=True).decode()


# espeak-ng's C API (speak_lib.h), the parts used here.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_PHONEMES_IPA = 0x02
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.c_void_p)


class _Library:
    """libespeak-ng from espeakng-loader, through ctypes.

    espeak-ng keeps state from one utterance to the next (the pitch-flutter phase, the noise
    generator), so in one process the same sentence comes out differently the second time.
    Each call therefore loads a fresh copy of the library (about 15 ms), seeds both noise
    generators (espeak-ng's own and the C library's rand()) and unloads it afterwards: like
    the binary's one process per call, the audio depends only on its inputs.
    """

    kind = "library"

    def __init__(self, library_path: str, data_path: str) -> None:
        self.library_path = library_path
        self.data_path = data_path
        self.lock = threading.Lock()
        with self._session() as (lib, _rate):
            self.version = f"espeak-ng {lib.espeak_Info(None).decode()}"

    @contextlib.contextmanager
    def _session(self) -> Iterator[tuple[ctypes.CDLL, int]]:
        """A freshly loaded and initialised library and its sample rate; unloaded on exit."""
        with self.lock:
            lib = ctypes.CDLL(self.library_path)
            _declare(lib)
            _libc_srand(1)  # breath noise also comes from the C library's rand()
            try:
                rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                             self.data_path.encode("utf-8"),
                                             _INITIALIZE_DONT_EXIT)
                if rate <= 0:
                    raise UserError(f"libespeak-ng could not load its data from {self.data_path}; "
                                    f"reinstall espeakng-loader ({_INSTALL_HINT})")
                if hasattr(lib, "espeak_ng_SetRandSeed"):  # 1.52+: its own noise generator
                    lib.espeak_ng_SetRandSeed(ctypes.c_long(1))
                try:
                    yield lib, rate
                finally:
                    lib.espeak_Terminate()
            finally:
                handle = lib._handle
                del lib
                _ctypes.dlclose(handle)

    @staticmethod
    def _set_voice(lib: ctypes.CDLL, spec: str) -> None:
        if lib.espeak_SetVoiceByName(spec.encode("utf-8")) != _EE_OK:
            raise UserError(f"espeak-ng has no voice '{spec}'; check the name with "
                            "`espeak-ng --voices` (and --voices=variant)")

    def synthesize(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        chunks: list[np.ndarray] = []

        def collect(samples, n_samples, _events) -> int:
            if samples and n_samples > 0:
                chunks.append(np.ctypeslib.as_array(samples, shape=(n_samples,)).copy())
            return 0  # 0 = go on synthesizing

        data = text.encode("utf-8") + b"\0"
        with self._session() as (lib, rate):
            callback = _SynthCallback(collect)  # referenced until the synthesis is over
            lib.espeak_SetSynthCallback(callback)
            self._set_voice(lib, voice.spec)
            lib.espeak_SetParameter(_PARAM_RATE, voice.rate, 0)
            lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0)
            status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0,
                                      _CHARS_UTF8 | _ENDPAUSE, None, None)
            lib.espeak_Synchronize()
        if status != _EE_OK or not chunks:
            raise UserError(f"libespeak-ng could not speak '{text[:40]}' with voice "
                            f"'{voice.spec}' (status {status})")
        return np.concatenate(chunks).astype(np.float32) / 32768.0, int(rate)

    def phonemes(self, text: str, voice: str) -> str:
        buffer = ctypes.create_string_buffer(text.encode("utf-8"))
        pointer = ctypes.c_void_p(ctypes.addressof(buffer))
        clauses = []
        with self._session() as (lib, _rate):
            self._set_voice(lib, voice)
            # Each call phonemizes one clause and advances the pointer; NULL at the end.
            while pointer.value:
                clause = lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8,
                                                   _PHONEMES_IPA)
                if clause:
                    clauses.append(clause.decode("utf-8"))
        return "\n".join(clauses)


def _libc_srand(seed: int) -> None:
    ctypes.CDLL(None).srand(ctypes.c_uint(seed))


def _declare(lib: ctypes.CDLL) -> None:
    """Argument and result types of the espeak-ng functions used here."""
    c = ctypes
    signatures = {
        "espeak_Initialize": ([c.c_int, c.c_int, c.c_char_p, c.c_int], c.c_int),
        "espeak_Terminate": ([], c.c_int),
        "espeak_Info": ([c.c_void_p], c.c_char_p),
        "espeak_SetSynthCallback": ([_SynthCallback], None),
        "espeak_SetVoiceByName": ([c.c_char_p], c.c_int),
        "espeak_SetParameter": ([c.c_int, c.c_int, c.c_int], c.c_int),
        "espeak_Synth": ([c.c_void_p, c.c_size_t, c.c_uint, c.c_int, c.c_uint, c.c_uint,
                          c.c_void_p, c.c_void_p], c.c_int),
        "espeak_Synchronize": ([], c.c_int),
        "espeak_TextToPhonemes": ([c.POINTER(c.c_void_p), c.c_int, c.c_int], c.c_char_p),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = restype


def _library_paths() -> tuple[str, str] | None:
    try:
        import espeakng_loader
    except ImportError:
        return None
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


@functools.lru_cache(maxsize=None)
def _make_backend(kind: str | None) -> _Binary | _Library:
    if kind not in (None, *BACKENDS):
        raise UserError(f"SPRUNE_ESPEAK={kind} is not a backend; use one of {', '.join(BACKENDS)}")
    exe = shutil.which("espeak-ng")
    if kind in (None, "binary") and exe:
        return _Binary(exe)
    paths = _library_paths() if kind in (None, "library") else None
    if paths:
        return _Library(*paths)
    wanted = f"the espeak-ng {kind}" if kind else "espeak-ng"
    raise UserError(f"{wanted} is not installed; {_INSTALL_HINT}")


def _backend() -> _Binary | _Library:
    return _make_backend(os.environ.get("SPRUNE_ESPEAK") or None)
