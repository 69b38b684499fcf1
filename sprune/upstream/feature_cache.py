"""What a frozen upstream computes below its transformer layers, once per utterance, shared
by every run.

With the conv feature encoder frozen (paper 000's setting, and wav2vec 2.0 fine-tuning's),
its output for an utterance never changes during fine-tuning, yet every update and every
evaluation recomputes it: on a CPU that is a quarter of a tiny model's update. A recipe that
fine-tunes many runs from one upstream on one small corpus (every method at every sparsity)
computes it once per utterance instead:

    cache = FeatureCache("dump/features")
    upstream.set_feature_cache(cache)      # UpstreamModel.forward now asks the cache
    ...
    cache.flush()                          # new entries to disk for the next process

`UpstreamModel` keeps the conv features [T', C] when only the conv encoder is frozen, and
the transformer layers' input [T', D] (feature projection, positional conv and, post-LN,
the LayerNorm applied; dropout not yet) when the whole front end is frozen
(`freeze_front_end`) and no time masking acts in between.

Entries are keyed by the weights that compute them (a fingerprint of every parameter and
buffer of those modules and the name of what is computed, so a changed or masked encoder
never gets stale features) and by the exact audio (a hash of the utterance's valid
samples), so no utterance ids are needed: training, evaluation and the pruning criteria all
hit the same entries, whatever data dir or batch the audio comes from.

Each utterance is encoded alone, without the batch's padding, in float32 (also under
autocast). That is what a reference implementation computes for one utterance; in a padded
batch a group-norm encoder (Base models) normalises over the padding too, so a run with the
cache differs slightly from one without it (by the padding's effect, which length-bucketed
batches keep small). Entries are kept in host memory and on disk in float32, 4 bytes per
channel per 20 ms frame (the shipped tiny upstream: 12.8 kB per second of audio for conv
features, 38.4 kB for the layers' input), which suits small corpora only.

On disk, `DIR/<fingerprint>/` holds safetensors shards (`<hash>` -> [T', C]); each process
writes its new entries as a shard of its own (temporary file, then rename), so processes
running at once never write the same file; entries two of them computed are simply read
twice.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from sprune.io import FILE_MODE

SHARD_SUFFIX = ".safetensors"
FLUSH_EVERY = 2048   # new entries kept in memory before they go to disk unasked


def audio_key(samples: Tensor) -> str:
    """Hash of a 1-D waveform's exact float32 samples (the cache key of its features)."""
    data = samples.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()


def module_fingerprint(modules: Sequence[nn.Module], kind: str = "") -> str:
    """Hash of `kind` and every parameter and buffer of `modules` (names, shapes, float32
    values)."""
    digest = hashlib.blake2b(kind.encode(), digest_size=12)
    for index, module in enumerate(modules):
        for name, tensor in sorted({**dict(module.named_parameters()),
                                    **dict(module.named_buffers())}.items()):
            digest.update(f"{index}.{name}".encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy()
                          .tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Frozen features by (fingerprint of the modules computing them, audio hash), in memory
    and on disk.

    `directory` None keeps them in memory only (one process). Deep copies of a model share
    the cache (`__deepcopy__` returns the same object): every model a run builds from its
    upstream (rewinding, the methods' copies) hits the same entries.
    """

    def __init__(self, directory: str | os.PathLike | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._entries: dict[str, dict[str, Tensor]] = {}   # fingerprint -> key -> [T', C]
        self._new: dict[str, dict[str, Tensor]] = {}
        self._fingerprints: dict[tuple, tuple[tuple, str]] = {}
        self.computed = 0     # utterances encoded by this process (the rest came from cache)

    def __deepcopy__(self, memo: dict) -> "FeatureCache":
        return self

    # -- lookup --------------------------------------------------------------------------------
    def _fingerprint(self, modules: Sequence[nn.Module], kind: str) -> str:
        """The modules' fingerprint, rehashed only when a weight changed (in-place writes
        bump a tensor's version; moving or reloading it changes its storage)."""
        state = tuple((t.data_ptr(), t._version) for m in modules
                      for t in list(m.parameters()) + list(m.buffers()))
        memo = (kind, *map(id, modules))
        known = self._fingerprints.get(memo)
        if known is None or known[0] != state:
            known = (state, module_fingerprint(modules, kind))
            self._fingerprints[memo] = known
        return known[1]

    def _table(self, fingerprint: str) -> dict[str, Tensor]:
        if fingerprint not in self._entries:
            self._entries[fingerprint] = self._load(fingerprint)
        return self._entries[fingerprint]

    def features(self, encode: Callable[[Tensor], Tensor], wavs: Tensor,
                 lengths: Tensor | None, output_lengths: Callable[[Tensor], Tensor],
                 modules: Sequence[nn.Module], kind: str) -> Tensor:
        """What `encode(wavs)` returns, [B, T', C], with each row encoded alone.

        encode: a frozen function of the audio ([1, T] -> [1, T', C]) computed by `modules`
        alone (their weights key the entries, with `kind`, the name of what it computes);
        wavs [B, T] (zero-padded), lengths [B] valid samples or None (no padding). Frames
        past a row's valid length are zero. On the device and in the dtype of `wavs`.
        """
        fingerprint = self._fingerprint(modules, kind)
        table = self._table(fingerprint)
        batch, samples = wavs.shape
        valid = ([samples] * batch if lengths is None
                 else [int(n) for n in lengths.detach().cpu().tolist()])
        rows = []
        for b in range(batch):
            audio = wavs[b, :valid[b]]
            key = audio_key(audio)
            found = table.get(key)
            if found is None:
                with torch.no_grad(), torch.autocast(wavs.device.type, enabled=False):
                    found = encode(audio.float()[None])[0].detach().cpu()
                table[key] = found
                self._new.setdefault(fingerprint, {})[key] = found
                self.computed += 1
            rows.append(found)
        frames = int(output_lengths(torch.tensor([samples]))[0])
        out = torch.zeros(batch, frames, rows[0].shape[-1])
        for b, row in enumerate(rows):
            out[b, :row.shape[0]] = row[:frames]
        if sum(len(new) for new in self._new.values()) >= FLUSH_EVERY:
            self.flush()
        return out.to(device=wavs.device, dtype=wavs.dtype)

    # -- disk ----------------------------------------------------------------------------------
    def _load(self, fingerprint: str) -> dict[str, Tensor]:
        from safetensors.torch import load_file

        table: dict[str, Tensor] = {}
        if self.directory is None:
            return table
        folder = self.directory / fingerprint
        if folder.is_dir():
            for shard in sorted(folder.glob(f"*{SHARD_SUFFIX}")):
                table.update(load_file(shard))
        return table

    def flush(self) -> None:
        """Write the entries this process computed since the last flush (one shard per
        encoder fingerprint, atomically); nothing to do without a directory. A directory
        that cannot be written (e.g. the absolute path of a run folder copied from another
        machine) costs a one-line warning and the entries stay in memory: a cache only
        saves time, so it never fails a run."""
        if self.directory is None:
            self._new.clear()
            return
        for fingerprint, new in list(self._new.items()):
            try:
                self._write_shard(self.directory / fingerprint, new)
            except OSError as error:
                print(f"sprune: feature cache {self.directory} is not writable ({error}); "
                      "its entries stay in this process's memory", file=sys.stderr)
                self.directory = None
                self._new.clear()
                return
            del self._new[fingerprint]

    @staticmethod
    def _write_shard(folder: Path, entries: dict[str, Tensor]) -> None:
        # not sprune.io.atomic_path: that one lets rank 0 alone write and waits at a barrier,
        # but every process flushes its own shard, whenever it has new entries
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".shard-", suffix=".tmp", dir=folder)
        os.close(fd)
        try:
            os.chmod(tmp, FILE_MODE)   # mkstemp's 0600 would hide the cache from a lab group
            save_file({key: value.contiguous() for key, value in entries.items()}, tmp)
            os.replace(tmp, folder / f"shard-{os.getpid()}-{os.urandom(4).hex()}"
                                     f"{SHARD_SUFFIX}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def cached_entries(directory: str | os.PathLike) -> dict[str, int]:
    """Entries on disk per encoder fingerprint (for reports and tests)."""
    from safetensors import safe_open

    counts: dict[str, int] = {}
    for folder in sorted(Path(directory).iterdir()) if Path(directory).is_dir() else []:
        keys: set[str] = set()
        for shard in folder.glob(f"*{SHARD_SUFFIX}"):
            with safe_open(shard, "pt") as handle:
                keys.update(handle.keys())
        counts[folder.name] = len(keys)
    return counts


__all__ = ["FeatureCache", "audio_key", "cached_entries", "module_fingerprint"]
