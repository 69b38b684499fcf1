"""The frozen conv encoder's feature cache: per-utterance features equal the encoder's own,
shared on disk between processes, never stale after a weight change, and wired into
recipe configs (`feature_cache:`) with a one-line error when the encoder trains."""
from __future__ import annotations

import json

import pytest
import torch

from sprune.upstream import UpstreamModel, save_upstream, tiny_config
from sprune.upstream.feature_cache import FeatureCache, audio_key, cached_entries

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def frozen_model(seed: int = 0) -> UpstreamModel:
    torch.manual_seed(seed)
    return UpstreamModel(tiny_config("hubert"), freeze_feature_encoder=True).eval()


def conv_features(cache: FeatureCache, model: UpstreamModel, wavs: torch.Tensor,
                  lengths: torch.Tensor) -> torch.Tensor:
    return cache.features(model.feature_extractor, wavs, lengths, model.frame_lengths,
                          [model.feature_extractor], "conv_features")


def padded_batch(lengths: list[int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    wavs = torch.zeros(len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        wavs[row, :n] = torch.randn(n, generator=gen)
    return wavs, torch.tensor(lengths)


def test_each_row_is_the_encoder_output_of_that_utterance_alone():
    model = frozen_model()
    wavs, lengths = padded_batch([4000, 2500, 3200])
    cache = FeatureCache(None)
    got = conv_features(cache, model, wavs, lengths)
    with torch.no_grad():
        assert got.shape == model.feature_extractor(wavs).shape
        for row, n in enumerate(lengths.tolist()):
            alone = model.feature_extractor(wavs[row:row + 1, :n])[0]
            assert torch.equal(got[row, :alone.shape[0]], alone)
            assert not got[row, alone.shape[0]:].any()      # padded frames are zero
    assert cache.computed == 3
    again = conv_features(cache, model, wavs[[2, 0]], lengths[[2, 0]])
    assert cache.computed == 3                               # every row came from the cache
    assert torch.equal(again[1], got[0]) and torch.equal(again[0], got[2, :again.shape[1]])


def test_model_forward_with_the_cache_equals_without_on_unpadded_audio():
    model = frozen_model()
    wavs = torch.randn(2, 3000)
    with torch.no_grad():   # batched vs one-at-a-time convolutions: float rounding only
        plain = model(wavs).hidden_states
        model.set_feature_cache(FeatureCache(None))
        cached = model(wavs).hidden_states
        cached_again = model(wavs, torch.tensor([3000, 3000])).hidden_states
    for a, b, c in zip(plain, cached, cached_again):
        assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)


def test_with_a_frozen_front_end_the_layer_input_is_cached():
    model = frozen_model()
    model.freeze_front_end()
    wavs = torch.randn(2, 3000)
    with torch.no_grad():
        plain = model(wavs).hidden_states
        cache = FeatureCache(None)
        model.set_feature_cache(cache)
        cached = model(wavs, torch.tensor([3000, 3000])).hidden_states
    for a, b in zip(plain, cached):
        assert torch.allclose(a, b, atol=1e-5)
    assert cache.computed == 2 and len(cache._entries) == 1
    (entries,) = cache._entries.values()
    assert {e.shape[-1] for e in entries.values()} == {model.config.embed_dim}
    # time masking acts between the projection and the layers: the conv features are cached
    model.set_time_masking(0.5, 2)
    model.train()(wavs)
    assert len(cache._entries) == 2 and cache.computed == 4


def test_a_trainable_encoder_ignores_the_cache():
    model = frozen_model()
    cache = FeatureCache(None)
    model.set_feature_cache(cache)
    model.freeze_feature_encoder(False)
    model.train()(torch.randn(1, 2000))
    assert cache.computed == 0


def test_entries_go_to_disk_and_the_next_process_reads_them(tmp_path):
    model = frozen_model()
    wavs, lengths = padded_batch([3000, 2000])
    first = FeatureCache(tmp_path / "cache")
    expected = conv_features(first, model, wavs, lengths)
    first.flush()
    assert list(cached_entries(tmp_path / "cache").values()) == [2]
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    from sprune.io import FILE_MODE

    (shard,) = (tmp_path / "cache").rglob("*.safetensors")
    assert shard.stat().st_mode & 0o777 == FILE_MODE
    second = FeatureCache(tmp_path / "cache")
    got = conv_features(second, model, wavs, lengths)
    assert second.computed == 0 and torch.equal(got, expected)
    second.flush()                                           # nothing new: no empty shard
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 1


def test_an_unwritable_cache_dir_warns_once_and_keeps_the_entries(tmp_path, capsys):
    model = frozen_model()
    wavs, lengths = padded_batch([3000])
    (tmp_path / "a_file").write_text("")
    cache = FeatureCache(tmp_path / "a_file" / "cache")   # a path under a regular file
    expected = conv_features(cache, model, wavs, lengths)
    cache.flush()
    warning = capsys.readouterr().err
    assert "is not writable" in warning and len(warning.strip().splitlines()) == 1
    assert torch.equal(conv_features(cache, model, wavs, lengths), expected)
    assert cache.computed == 1
    cache.flush()                                             # nothing more to say
    assert capsys.readouterr().err == ""


def test_a_changed_encoder_weight_is_a_cache_miss():
    model = frozen_model()
    wavs, lengths = padded_batch([3000])
    cache = FeatureCache(None)
    before = conv_features(cache, model, wavs, lengths)
    with torch.no_grad():
        model.feature_extractor.conv_layers[1].conv.weight[0].zero_()   # e.g. a mask
    after = conv_features(cache, model, wavs, lengths)
    assert cache.computed == 2 and not torch.equal(before, after)


def test_audio_key_is_exact_and_ignores_dtype_of_equal_values():
    x = torch.randn(100)
    assert audio_key(x) == audio_key(x.clone())
    y = x.clone()
    y[50] += 1e-6
    assert audio_key(x) != audio_key(y)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from conftest import build_data_dir

    root = tmp_path_factory.mktemp("feature_cache")
    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("hubert")), root / "upstream")
    for name in ("train", "dev"):
        build_data_dir(root, n_utts=6, name=name, seconds=(0.3, 0.4))
    return root


def write_config(root, name: str, extra: str) -> str:
    path = root / f"{name}.yaml"
    path.write_text(f"upstream: {root / 'upstream'}\nhead: {{hidden_dim: 16, embed_dim: 8}}\n"
                    "train: {max_steps: 3, batch_size: 3, lr: 1.0e-3, eval_every: 3, "
                    f"save_every: 3, device: cpu}}\n{extra}")
    return str(path)


def test_a_recipe_run_fills_the_cache_and_the_next_run_reuses_it(workspace, sprune_cli):
    root = workspace
    config = write_config(root, "cached", "feature_cache: dump/features\n")
    args = ["prune", "--config", config, "--train", root / "train", "--dev", root / "dev"]
    done = sprune_cli(*args, "--method", "dense", "--out", root / "exp" / "dense", cwd=root)
    assert done.returncode == 0, done.stderr
    saved = json.loads((root / "exp" / "dense" / "experiment.json").read_text())
    assert saved["config"]["feature_cache"] == str(root / "dump" / "features")   # absolute
    shards = sorted((root / "dump" / "features").rglob("*.safetensors"))
    assert len(shards) == 1                       # written at exit
    # train and dev hold the same 6 sine waves: one entry per distinct audio
    assert list(cached_entries(root / "dump" / "features").values()) == [6]
    # a second process (another method) finds every utterance: it writes no shard
    done = sprune_cli(*args, "--method", "mpi", "--sparsity", "0.5", "--out",
                      root / "exp" / "mpi", cwd=root)
    assert done.returncode == 0, done.stderr
    assert sorted((root / "dump" / "features").rglob("*.safetensors")) == shards
    # evaluation from another folder reads the same cache through experiment.json
    done = sprune_cli("evaluate", root / "exp" / "mpi", "--data", root / "dev", "--name", "d",
                      cwd=root / "exp")
    assert done.returncode == 0, done.stderr
    assert sorted((root / "dump" / "features").rglob("*.safetensors")) == shards
    assert not (root / "exp" / "dump").exists()


def test_feature_cache_with_a_trainable_encoder_is_one_line_and_exit_2(workspace, cli):
    root = workspace
    config = write_config(root, "bad", "feature_cache: dump/features\n"
                          "freeze_feature_encoder: false\n")
    done = cli("prune", "--config", config, "--train", root / "train", "--dev", root / "dev",
               "--method", "dense", "--out", root / "exp" / "bad")
    assert done.returncode == 2
    assert "freeze_feature_encoder: true" in done.stderr and "feature_cache" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (root / "exp" / "bad" / "outcome.json").exists()
