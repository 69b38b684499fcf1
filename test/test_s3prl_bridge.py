"""The s3prl bridge, through s3prl's and espnet's own classes.

A tiny random upstream is saved in sprune's format, registered as an s3prl name and loaded by
`s3prl.nn.S3PRLUpstream`, s3prl's `Featurizer`s (new and old runner) and espnet's
`S3prlFrontend`; every output is checked against the model's own forward. Importing s3prl
(and the espnet modules its hub pulls in) takes most of this file's time, so it happens once,
in the module-scoped `hub` fixture.
"""
from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from sprune.errors import UserError
from sprune.upstream import UpstreamModel, save_upstream, tiny_config
from sprune.upstream.s3prl_bridge import (SpruneExpert, build_expert, import_s3prl,
                                          install_torchaudio_shim, main, register)

TOL = 1e-5
LENGTHS = torch.tensor([16000, 9123])  # unequal: the second wav is padded
NUM_LAYERS = 3


@pytest.fixture(scope="module")
def hub():
    return import_s3prl()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(model in eval mode, its sprune upstream dir): pre-LN, layer-norm extractor, 3 layers."""
    torch.manual_seed(0)
    model = UpstreamModel(tiny_config("wav2vec2", extractor_mode="layer_norm",
                                      layer_norm_first=True, num_layers=NUM_LAYERS,
                                      hidden_dropout=0.1, layerdrop=0.5))
    with torch.no_grad():  # move norms and biases off their initial values
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    directory = save_upstream(model, tmp_path_factory.mktemp("ckpt") / "upstream")
    return model.eval(), directory


@pytest.fixture(scope="module")
def name(hub):
    return register("sprune_test")


def padded_batch() -> torch.Tensor:
    """[2, 16000]: two wavs of LENGTHS samples, zero-padded."""
    wavs = 0.3 * torch.randn(len(LENGTHS), int(LENGTHS.max()),
                             generator=torch.Generator().manual_seed(1))
    for i, length in enumerate(LENGTHS):
        wavs[i, length:] = 0.0
    return wavs


def reference(model: UpstreamModel, wavs: torch.Tensor, lengths: torch.Tensor = LENGTHS):
    with torch.no_grad():
        return model(wavs, lengths)


def assert_valid_frames_equal(got: torch.Tensor, want: torch.Tensor, frames: torch.Tensor) -> None:
    for b, valid in enumerate(frames.tolist()):
        assert (got[b, :valid] - want[b, :valid]).abs().max() <= TOL


# --- the shim -------------------------------------------------------------------------------
def test_shim_is_idempotent_and_keeps_s3prl_importable(hub):
    import torchaudio

    install_torchaudio_shim()
    sox = sys.modules["torchaudio.sox_effects"]
    install_torchaudio_shim()
    assert sys.modules["torchaudio.sox_effects"] is sox is torchaudio.sox_effects
    assert torchaudio.set_audio_backend("sox_io") is None
    with pytest.raises(RuntimeError, match="removed in torchaudio 2.9"):
        sox.apply_effects_tensor(torch.zeros(1, 16000), 16000, [["channels", "1"]])
    assert import_s3prl() is hub and "hubert" in hub.options()


# --- S3PRLUpstream + Featurizer ------------------------------------------------------------
def test_s3prl_upstream_gives_the_models_hidden_states(name, checkpoint):
    from s3prl.nn import S3PRLUpstream

    model, directory = checkpoint
    assert name in S3PRLUpstream.available_names()
    upstream = S3PRLUpstream(name, path_or_url=str(directory)).eval()
    assert upstream.num_layers == NUM_LAYERS + 1
    assert upstream.downsample_rates == [320] * (NUM_LAYERS + 1)
    assert upstream.hidden_sizes == [model.config.embed_dim] * (NUM_LAYERS + 1)

    wavs = padded_batch()
    with torch.no_grad():
        all_hs, all_lens = upstream(wavs, LENGTHS)
    ours = reference(model, wavs)
    assert len(all_hs) == len(all_lens) == NUM_LAYERS + 1
    s3prl_lens = (LENGTHS - 1) // 320 + 1  # s3prl's convention: one frame per started hop
    for got, want, lens in zip(all_hs, ours.hidden_states, all_lens):
        assert got.shape == (2, int(s3prl_lens.max()), model.config.embed_dim)
        assert torch.equal(lens, s3prl_lens)
        assert_valid_frames_equal(got, want, ours.lengths)
    # the padded wav's frames do not depend on the padding
    alone = reference(model, wavs[1:, :LENGTHS[1]], LENGTHS[1:]).hidden_states[-1]
    assert_valid_frames_equal(all_hs[-1][1:], alone, ours.lengths[1:])


def test_featurizer_trains_the_upstream(name, checkpoint):
    from s3prl.nn import Featurizer, S3PRLUpstream

    model, directory = checkpoint
    torch.manual_seed(0)
    upstream = S3PRLUpstream(name, path_or_url=str(directory))
    featurizer = Featurizer(upstream)
    assert featurizer.output_size == model.config.embed_dim and featurizer.downsample_rate == 320
    upstream.train()  # layerdrop is 0.5 in the config: the bridge must switch it off
    for _ in range(4):
        upstream.zero_grad(set_to_none=True)
        featurizer.zero_grad(set_to_none=True)
        hs, hs_len = featurizer(*upstream(padded_batch(), LENGTHS))
        hs.pow(2).mean().backward()
        assert hs.shape[:2] == (2, int(hs_len.max()))
        assert featurizer.weights.grad is not None and featurizer.weights.grad.abs().sum() > 0
        no_grad = [n for n, p in upstream.named_parameters()
                   if p.grad is None or p.grad.abs().sum() == 0]
        assert no_grad == []


def test_frozen_feature_encoder_option(name, checkpoint):
    from s3prl.nn import Featurizer, S3PRLUpstream

    upstream = S3PRLUpstream(name, path_or_url=str(checkpoint[1]),
                             extra_conf={"freeze_feature_encoder": True})
    featurizer = Featurizer(upstream)
    hs, _ = featurizer(*upstream(padded_batch(), LENGTHS))
    hs.sum().backward()
    grads = {n: p.grad for n, p in upstream.named_parameters()}
    conv = [n for n in grads if ".feature_extractor." in n]
    assert conv and all(grads[n] is None for n in conv)
    assert all(grads[n] is not None for n in grads if n not in conv)


def test_relative_checkpoint_path_and_registered_default(hub, checkpoint, tmp_path,
                                                         monkeypatch):
    from s3prl.nn import S3PRLUpstream

    model, directory = checkpoint
    moved = tmp_path / "elsewhere"
    save_upstream(model, moved)
    monkeypatch.chdir(tmp_path)
    register("sprune_test_default", ckpt="elsewhere")
    upstream = S3PRLUpstream("sprune_test_default").eval()
    with torch.no_grad():
        got = upstream(padded_batch(), LENGTHS)[0][-1]
    ours = reference(model, padded_batch())
    assert_valid_frames_equal(got, ours.hidden_states[-1], ours.lengths)
    assert all(isinstance(v, torch.Tensor) for v in upstream.state_dict().values())


# --- espnet ---------------------------------------------------------------------------------
@pytest.mark.parametrize("multilayer", [True, False])
def test_espnet_s3prl_frontend(name, checkpoint, multilayer):
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    model, directory = checkpoint
    frontend = S3prlFrontend(frontend_conf={"upstream": name, "path_or_url": str(directory)},
                             multilayer_feature=multilayer)
    assert frontend.output_size() == model.config.embed_dim and frontend.hop_length == 320
    wavs = padded_batch()
    with torch.no_grad():
        feats, feats_lens = frontend(wavs, LENGTHS)
    assert feats.shape == (2, int(feats_lens.max()), model.config.embed_dim)
    assert torch.equal(feats_lens, (LENGTHS - 1) // 320 + 1)
    ours = reference(model, wavs)
    # the Featurizer's weights start equal: the multilayer feature is the mean of all layers
    want = (torch.stack(ours.hidden_states).mean(0) if multilayer
            else ours.hidden_states[-1])
    assert_valid_frames_equal(feats, want, ours.lengths)


# --- s3prl's old runner -------------------------------------------------------------------
def test_old_runner_featurizer_and_entry_point(name, checkpoint, tmp_path, monkeypatch,
                                               capsys):
    model, directory = checkpoint
    # a stand-in for run_downstream.py: builds the upstream the way its Runner does
    (tmp_path / "fake_runner.py").write_text(textwrap.dedent("""
        import sys
        import torch
        from s3prl import hub
        from s3prl.upstream.interfaces import Featurizer

        upstream = getattr(hub, sys.argv[1])(ckpt=sys.argv[2], model_config=None,
                                             refresh=False)
        featurizer = Featurizer(upstream, "hidden_states", upstream_device="cpu")
        wavs = [torch.randn(16000), torch.randn(9123)]
        feats = featurizer(wavs, upstream(wavs))
        print("frames", [tuple(f.shape) for f in feats], featurizer.downsample_rate)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["--name", "sprune_runner", "fake_runner", "sprune_runner", str(directory)])
    assert code == 0
    dim = model.config.embed_dim
    assert f"frames [(49, {dim}), (29, {dim})] 320" in capsys.readouterr().out


def test_entry_point_errors_are_one_line(name, capsys):
    assert main(["--name", "sprune_runner", "no_such_module_here"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no_such_module_here" in err
    assert main(["--name", "hubert", "json.tool"]) == 2
    assert "already has an upstream named 'hubert'" in capsys.readouterr().err


# --- bad input ------------------------------------------------------------------------------
def test_missing_checkpoint_dir_is_one_line_user_error(name, tmp_path):
    from s3prl.nn import S3PRLUpstream

    missing = tmp_path / "no_such_upstream"
    with pytest.raises(UserError) as caught:
        S3PRLUpstream(name, path_or_url=str(missing))
    message = str(caught.value)
    assert "\n" not in message and str(missing) in message and "does not exist" in message


@pytest.mark.parametrize("kwargs, words", [
    ({"ckpt": None}, "needs a checkpoint"),
    ({"model_config": "upstream.yaml"}, "model_config 'upstream.yaml' is not used"),
    ({"layerdrop": 0.1}, "unknown option 'layerdrop'"),
])
def test_bad_expert_options(checkpoint, kwargs, words):
    arguments = {"ckpt": str(checkpoint[1]), **kwargs}
    with pytest.raises(UserError, match=words):
        build_expert("sprune", **arguments)


@pytest.mark.parametrize("bad, words", [
    ("hubert", "already has an upstream named 'hubert'"),
    ("_private", "not usable"),
    ("my-model", "not usable"),
])
def test_bad_names(hub, bad, words):
    with pytest.raises(UserError, match=words):
        register(bad)


def test_expert_rejects_batched_tensors(checkpoint):
    expert = SpruneExpert(checkpoint[0])
    with pytest.raises(ValueError, match="1-D"):
        expert([torch.zeros(2, 16000)])
