"""Bad input to the upstream's Python API: each is a one-line `UserError` saying what to do."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
import torchaudio
import transformers
from safetensors.torch import load_file, save_file

from sprune.errors import UserError
from sprune.upstream import UpstreamConfig, UpstreamModel, load_upstream, save_upstream, tiny_config


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.fixture
def sprune_dir(tmp_path):
    path = tmp_path / "ours"
    save_upstream(UpstreamModel(tiny_config("wavlm")), path)
    return path


@pytest.fixture
def hf_dir(tmp_path):
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    transformers.Wav2Vec2Model(config).save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def tiny_torchaudio(tmp_path):
    model = torchaudio.models.wav2vec2_model(
        extractor_mode="group_norm", extractor_conv_layer_config=None, extractor_conv_bias=False,
        encoder_embed_dim=32, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=16,
        encoder_pos_conv_groups=4, encoder_num_layers=2, encoder_num_heads=4,
        encoder_attention_dropout=0.0, encoder_ff_interm_features=48,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False,
        encoder_layer_drop=0.0, aux_num_out=None)
    return model.state_dict()


def test_missing_checkpoint(tmp_path):
    with pytest.raises(UserError) as err:
        load_upstream(str(tmp_path / "nowhere" / "model.pt"))
    assert "nowhere/model.pt does not exist" in one_line(err)


def test_dir_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="needs config.json"):
        load_upstream(str(tmp_path / "empty"))


def test_unknown_formats(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="unknown checkpoint format") as err:
        load_upstream(str(tmp_path / "other.pt"))
    one_line(err)
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        load_upstream(str(tmp_path / "notes.pt"))
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "config.json").write_text('{"hello": 1}')
    with pytest.raises(UserError, match="neither sprune's format"):
        load_upstream(str(tmp_path / "dir"))


def test_unsupported_hugging_face_model_type(hf_dir):
    config = json.loads((hf_dir / "config.json").read_text())
    config["model_type"] = "wav2vec2-conformer"
    (hf_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="model_type 'wav2vec2-conformer' is not supported"):
        load_upstream(str(hf_dir))


def test_hugging_face_config_that_does_not_match_the_weights(hf_dir):
    config = json.loads((hf_dir / "config.json").read_text())
    config["intermediate_size"] = 40
    (hf_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError) as err:
        load_upstream(str(hf_dir))
    message = one_line(err)
    assert "'encoder.layers.0.feed_forward.intermediate_dense.weight'" in message
    assert "(48, 32)" in message and "(40, 32)" in message


def test_sprune_config_that_does_not_match_the_weights(sprune_dir):
    document = json.loads((sprune_dir / "config.json").read_text())
    document["config"]["layers"][1]["qk_dims"] = [8, 8, 8, 4]
    (sprune_dir / "config.json").write_text(json.dumps(document))
    with pytest.raises(UserError) as err:
        load_upstream(str(sprune_dir))
    message = one_line(err)
    assert "'encoder.layers.1.attention.q_proj.weight' has shape (32, 32)" in message
    assert "expects (28, 32)" in message


def test_invalid_sprune_configs(sprune_dir):
    document = json.loads((sprune_dir / "config.json").read_text())
    path = sprune_dir / "config.json"
    bad = json.loads(json.dumps(document))
    bad["config"]["layers"][0]["vo_dims"] = [8, 8]
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match=r"'layers\[0\].vo_dims' has 2 entries for 4 kept heads"):
        load_upstream(str(sprune_dir))
    bad = json.loads(json.dumps(document))
    bad["config"]["num_layers"] = 3
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match="unknown key 'num_layers'"):
        load_upstream(str(sprune_dir))
    bad = json.loads(json.dumps(document))
    bad["config"]["family"] = "data2vec"
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match="'family' is 'data2vec'"):
        load_upstream(str(sprune_dir))
    path.write_text("{ not json")
    with pytest.raises(UserError, match="invalid JSON"):
        load_upstream(str(sprune_dir))


def test_missing_weights(tmp_path):
    state = tiny_torchaudio(tmp_path)
    del state["encoder.transformer.layers.1.final_layer_norm.bias"]
    torch.save(state, tmp_path / "model.pt")
    (tmp_path / "model.json").write_text(json.dumps({
        "extractor_mode": "group_norm", "extractor_conv_bias": False, "encoder_embed_dim": 32,
        "encoder_pos_conv_kernel": 16, "encoder_pos_conv_groups": 4, "encoder_num_layers": 2,
        "encoder_num_heads": 4, "encoder_ff_interm_features": 48,
        "encoder_layer_norm_first": False}))
    with pytest.raises(UserError, match="lacks weight 'encoder.layers.1.final_layer_norm.bias'"):
        load_upstream(str(tmp_path / "model.pt"))


def test_unexpected_weights(sprune_dir):
    weights = load_file(str(sprune_dir / "model.safetensors"))
    weights["encoder.layers.7.attention.q_proj.weight"] = torch.zeros(2, 2)
    save_file(weights, str(sprune_dir / "model.safetensors"))
    with pytest.raises(UserError, match="unexpected weight 'encoder.layers.7.attention.q_proj"):
        load_upstream(str(sprune_dir))


def test_hugging_face_checkpoint_with_unknown_tensor(hf_dir):
    weights = load_file(str(hf_dir / "model.safetensors"))
    weights["encoder.adapter.weight"] = torch.zeros(2)
    save_file(weights, str(hf_dir / "model.safetensors"))
    with pytest.raises(UserError, match="unexpected weight 'encoder.adapter.weight'"):
        load_upstream(str(hf_dir))


def test_torchaudio_heads_cannot_be_inferred_without_sidecar(tmp_path):
    torch.save(tiny_torchaudio(tmp_path), tmp_path / "model.pt")
    with pytest.raises(UserError) as err:
        load_upstream(str(tmp_path / "model.pt"))
    message = one_line(err)
    assert "number of attention heads" in message and str(tmp_path / "model.json") in message


def test_torchaudio_family_errors(tmp_path):
    torch.save(tiny_torchaudio(tmp_path), tmp_path / "model.pt")
    with pytest.raises(UserError, match="unknown family 'conformer'"):
        load_upstream(f"torchaudio:conformer:{tmp_path / 'model.pt'}")
    with pytest.raises(UserError, match="not WavLM's but the family is 'wavlm'"):
        load_upstream(f"torchaudio:wavlm:{tmp_path / 'model.pt'}")


def test_raw_fairseq_checkpoint_needing_unsafe_unpickling(tmp_path):
    torch.save({"args": argparse.Namespace(arch="wav2vec2"), "model": {}}, tmp_path / "w2v.pt")
    with pytest.raises(UserError) as err:
        load_upstream(str(tmp_path / "w2v.pt"))
    message = one_line(err)
    assert "unsafe unpickling" in message and "s3prl.upstream.wav2vec2.convert" in message


def test_fine_tuned_fairseq_checkpoint(tmp_path):
    torch.save({"model_cfg": {"w2v_path": "x.pt"}, "task_cfg": {}, "model_weight": {}},
               tmp_path / "ctc.pt")
    with pytest.raises(UserError, match="fine-tuned fairseq model"):
        load_upstream(str(tmp_path / "ctc.pt"))


def test_bad_fairseq_conv_spec(tmp_path):
    cfg = {"conv_feature_layers": "[(512, 10, 5)] + __import__('os')"}
    torch.save({"model_cfg": cfg, "task_cfg": {}, "model_weight": {}}, tmp_path / "m.pt")
    with pytest.raises(UserError, match="conv_feature_layers .* is not a list"):
        load_upstream(str(tmp_path / "m.pt"))


def test_hub_id_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError) as err:
        load_upstream("facebook/wav2vec2-base")
    message = one_line(err)
    assert "'facebook/wav2vec2-base' is not a local path" in message
    assert "pass a local path" in message


def test_hub_id_resolves_through_the_cache(tmp_path, monkeypatch, hf_dir):
    """A hub id found in the Hugging Face cache (laid out as the hub writes it) loads."""
    import shutil

    import huggingface_hub.constants

    repo = tmp_path / "cache" / "models--someone--tiny-w2v"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(hf_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    model, config = load_upstream("someone/tiny-w2v")
    assert config.family == "wav2vec2" and config.embed_dim == 32


def test_audio_shorter_than_the_receptive_field():
    model = UpstreamModel(tiny_config()).eval()
    assert model.config.receptive_field == 400
    with pytest.raises(UserError, match="399 samples is shorter than .* receptive field"):
        model(torch.zeros(1, 399))
    with pytest.raises(UserError, match="399 samples"):
        model(torch.zeros(2, 1000), torch.tensor([1000, 399]))
    out = model(torch.zeros(1, 400))
    assert out.hidden_states[0].shape[1] == 1 and out.lengths.tolist() == [1]


def test_config_validation_messages():
    config = tiny_config()
    config.layers[0].kept_heads = [0, 0, 1, 2]
    with pytest.raises(UserError, match=r"'layers\[0\].kept_heads' is \[0, 0, 1, 2\]"):
        config.validate()
    with pytest.raises(UserError, match="unknown upstream architecture 'wav2vec3'"):
        from sprune.upstream import preset_config
        preset_config("wav2vec3")
    data = tiny_config().to_dict()
    data["layers"][1]["qk_dims"] = [8, 8, 8, 9]
    with pytest.raises(UserError, match=r"each must be in \[0, 8\]"):
        UpstreamConfig.from_dict(data)


def test_hugging_face_weights_file_instead_of_dir(hf_dir):
    with pytest.raises(UserError, match="pass the model dir"):
        load_upstream(str(hf_dir / "model.safetensors"))
