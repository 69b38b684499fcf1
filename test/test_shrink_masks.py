"""Deterministic gates -> physically shrunk upstream: the shrunk model equals the masked one
for every structure type, its parameter count equals the formula's, and `sprune shrink`
writes a normal upstream dir (or fails in one line)."""
from __future__ import annotations

import pytest
import torch

from sprune import cli
from sprune.errors import UserError
from sprune.structured.mask_store import load_masks, save_masks
from sprune.structured.masked import MaskedUpstream
from sprune.structured.shrink_from_masks import selection_from_masks, shrink_masked
from sprune.structured.sparsity import ParameterBudget, parameter_count
from sprune.structured.structures import Structures
from sprune.upstream import UpstreamModel, load_upstream, tiny_config

ON, OFF = 10.0, -20.0           # P(z != 0) ~ 1 and ~ 1e-5: the hand-set gates are exact
LENGTHS = torch.tensor([4000, 3100, 2000])
TOL = 1e-4
STRUCTURES = Structures.names()
VARIANTS = {
    "wav2vec2_post_ln": dict(family="wav2vec2", layer_norm_first=False),
    "wavlm_pre_ln": dict(family="wavlm", layer_norm_first=True),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def upstream(family: str, layer_norm_first: bool, extractor_mode: str = "group_norm"
             ) -> UpstreamModel:
    torch.manual_seed(0)
    model = UpstreamModel(tiny_config(family, layer_norm_first=layer_norm_first,
                                      extractor_mode=extractor_mode))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero biases and varied weights, so removed parts matter
        for param in model.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=generator))
    return model.eval()


def batch() -> torch.Tensor:
    wavs = 0.3 * torch.randn(len(LENGTHS), int(LENGTHS.max()),
                             generator=torch.Generator().manual_seed(2))
    for row, length in enumerate(LENGTHS.tolist()):
        wavs[row, length:] = 0.0
    return wavs


def only(name: str) -> Structures:
    return Structures(**{field: field == name for field in STRUCTURES})


def set_gates_by_hand(masked: MaskedUpstream, seed: int = 3) -> dict[str, torch.Tensor]:
    """Random on/off gates, with whole-block removals forced through each kind of gate:
    layer 1 loses all value dims / heads / FFN units, layer 0 its attention block, layer 1
    its FFN block, and head 3 of layer 0 all its query-key dims. Returns the on/off pattern."""
    generator = torch.Generator().manual_seed(seed)
    pattern = {}
    for name, alpha in masked.gates.log_alphas().items():
        keep = torch.rand(alpha.shape, generator=generator) < 0.6
        if name in ("layers.1.vo", "layers.1.heads", "layers.1.ffn_units",
                    "layers.0.attention", "layers.1.ffn"):
            keep[:] = False
        if name in ("layers.1.attention", "layers.0.ffn"):
            keep[:] = True
        if name == "layers.0.qk":
            keep[3] = False
        if name == "layers.0.vo":
            keep[0] = True
        pattern[name] = keep
        with torch.no_grad():
            alpha.copy_(torch.where(keep, torch.tensor(ON), torch.tensor(OFF)))
    return pattern


def hidden_states(model, wavs: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return model(wavs, LENGTHS).hidden_states


def assert_same_outputs(a: list[torch.Tensor], b: list[torch.Tensor], frames: torch.Tensor) -> None:
    assert len(a) == len(b)
    for layer, (x, y) in enumerate(zip(a, b)):
        for row, count in enumerate(frames.tolist()):
            diff = (x[row, :count] - y[row, :count]).abs().max().item()
            assert diff <= TOL, f"hidden state {layer}, item {row}: differs by {diff}"


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("structure", STRUCTURES + ["all"])
def test_shrunk_equals_masked_for_every_structure(variant, structure):
    model = upstream(**VARIANTS[variant])
    structures = Structures.parse(STRUCTURES) if structure == "all" else only(structure)
    masked = MaskedUpstream(model, structures).eval()
    pattern = set_gates_by_hand(masked)
    dense_out = hidden_states(model, batch())
    shrunk = shrink_masked(masked)
    masked_out = hidden_states(masked, batch())
    frames = model.frame_lengths(LENGTHS)
    assert_same_outputs(hidden_states(shrunk, batch()), masked_out, frames)
    # The gates removed something that mattered.
    assert (dense_out[-1] - masked_out[-1]).abs().max() > 1e-2
    assert shrunk.num_parameters() < model.num_parameters()
    # The formula counts the shrunk model exactly.
    count = parameter_count(model.config, masked.eval_masks())
    assert float(count.total) == shrunk.num_parameters()
    # The shrunk sizes are the hand-set ones.
    layers = shrunk.config.layers
    if structure == "heads":
        assert layers[0].kept_heads == [h for h in range(4) if pattern["layers.0.heads"][h]]
        assert layers[1].kept_heads == []
    if structure == "vo_dims":
        assert layers[0].vo_dims == [int(n) for n in pattern["layers.0.vo"].sum(1) if n > 0]
        assert not layers[1].kept_heads
    if structure == "qk_dims":
        assert layers[0].qk_dims[3] == 0 and layers[0].kept_heads == [0, 1, 2, 3]
    if structure == "attention_layers":
        assert [len(layer.kept_heads) for layer in layers] == [0, 4]
    if structure == "ffn_units":
        assert layers[0].ffn_dim == int(pattern["layers.0.ffn_units"].sum())
        assert layers[1].ffn_dim == 0
    if structure == "ffn_layers":
        assert [layer.ffn_dim for layer in layers] == [64, 0]
    if structure == "conv_channels":
        assert [c for c, _, _ in shrunk.config.conv_layers[:-1]] == [
            int(pattern[f"conv.{j}"].sum()) for j in range(6)]
        assert shrunk.config.conv_layers[-1][0] == 32   # last layer feeds the projection LN


def test_layer_norm_extractor_shrinks_everything_but_conv():
    model = upstream("wavlm", True, extractor_mode="layer_norm")
    masked = MaskedUpstream(model, Structures(heads=True)).eval()
    set_gates_by_hand(masked, seed=5)
    shrunk = shrink_masked(masked)
    assert_same_outputs(hidden_states(shrunk, batch()), hidden_states(masked, batch()),
                        model.frame_lengths(LENGTHS))
    assert float(parameter_count(model.config, masked.eval_masks()).total) == \
        shrunk.num_parameters()


def test_no_gates_off_keeps_the_dense_model():
    model = upstream("wav2vec2", False)
    masked = MaskedUpstream(model, Structures(conv_channels=True)).eval()
    with torch.no_grad():
        for alpha in masked.gates.log_alphas().values():
            alpha.fill_(ON)
    selection = selection_from_masks(model.config, masked.eval_masks())
    shrunk = shrink_masked(masked)
    assert shrunk.config == model.config and selection.layers[0].heads == [0, 1, 2, 3]
    assert_same_outputs(hidden_states(shrunk, batch()), hidden_states(model, batch()),
                        model.frame_lengths(LENGTHS))


def test_sparsity_of_hard_masks_matches_the_shrunk_model():
    model = upstream("wav2vec2", False)
    masked = MaskedUpstream(model, Structures()).eval()
    set_gates_by_hand(masked)
    budget = ParameterBudget(model.config, Structures())
    shrunk = shrink_masked(masked)
    removed = model.num_parameters() - shrunk.num_parameters()
    assert budget.sparsity_of(masked.eval_masks()) == pytest.approx(removed / budget.dense_scope)


# --- masks on disk and `sprune shrink` ----------------------------------------------------------
@pytest.fixture
def shrink_cli():
    """Run `sprune shrink` in-process."""
    return lambda *args: cli.main(["shrink", *map(str, args)])


def trained_masks(tmp_path, steps: int = 7):
    model = upstream("wavlm", False)
    masked = MaskedUpstream(model, Structures.parse(STRUCTURES)).eval()
    set_gates_by_hand(masked)
    save_masks(masked, tmp_path / "run" / "masks", steps=steps)
    return masked


def test_masks_round_trip(tmp_path):
    masked = trained_masks(tmp_path)
    loaded, document = load_masks(tmp_path / "run" / "masks")
    assert document["steps"] == 7 and document["structures"]["conv_channels"] is True
    for name, alpha in masked.gates.log_alphas().items():
        assert torch.equal(loaded.gates.log_alphas()[name], alpha)
    assert_same_outputs(hidden_states(loaded, batch()), hidden_states(masked, batch()),
                        masked.upstream.frame_lengths(LENGTHS))
    report = document["report"]
    assert report["shrunk_parameters"] == shrink_masked(masked).num_parameters()


@pytest.mark.parametrize("source", ["--masks", "--run"])
def test_shrink_command_writes_a_loadable_upstream(tmp_path, shrink_cli, capsys, source):
    masked = trained_masks(tmp_path)
    path = tmp_path / "run" / ("masks" if source == "--masks" else "")
    assert shrink_cli(source, path, "--out", tmp_path / "shrunk") == 0
    assert sorted(p.name for p in (tmp_path / "shrunk").iterdir()) == [
        "config.json", "model.safetensors"]
    shrunk, config = load_upstream(str(tmp_path / "shrunk"))
    assert shrunk.num_parameters() < masked.upstream.num_parameters()
    assert_same_outputs(hidden_states(shrunk, batch()), hidden_states(masked, batch()),
                        masked.upstream.frame_lengths(LENGTHS))
    assert "parameters" in capsys.readouterr().out


def test_shrink_skips_an_out_newer_than_the_masks(tmp_path, shrink_cli, capsys):
    import os

    trained_masks(tmp_path)
    out = tmp_path / "shrunk"
    assert shrink_cli("--run", tmp_path / "run", "--out", out) == 0
    capsys.readouterr()
    assert shrink_cli("--run", tmp_path / "run", "--out", out) == 0
    assert "up to date" in capsys.readouterr().out
    assert shrink_cli("--run", tmp_path / "run", "--out", out, "--force") == 0
    assert "parameters" in capsys.readouterr().out
    # masks trained further (newer than the shrunk model): shrink again
    later = (out / "config.json").stat().st_mtime + 10
    os.utime(tmp_path / "run" / "masks" / "masks.safetensors", (later, later))
    assert shrink_cli("--run", tmp_path / "run", "--out", out) == 0
    assert "parameters" in capsys.readouterr().out


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sprune shrink: error: ")
    return err


def test_shrink_without_trained_masks_is_a_one_line_error(tmp_path, shrink_cli, capsys):
    (tmp_path / "empty").mkdir()
    assert shrink_cli("--masks", tmp_path / "empty", "--out", tmp_path / "out") == 2
    assert "has no trained masks" in one_line_error(capsys)
    assert shrink_cli("--run", tmp_path / "empty", "--out", tmp_path / "out") == 2
    assert "has no trained masks" in one_line_error(capsys)
    assert shrink_cli("--masks", tmp_path / "absent", "--out", tmp_path / "out") == 2
    assert "does not exist" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_shrink_of_untrained_masks_is_a_one_line_error(tmp_path, shrink_cli, capsys):
    trained_masks(tmp_path, steps=0)
    assert shrink_cli("--run", tmp_path / "run", "--out", tmp_path / "out") == 2
    assert "never trained" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_masks_of_another_upstream_are_rejected(tmp_path):
    trained_masks(tmp_path)
    other = MaskedUpstream(upstream("wavlm", False), Structures())
    save_masks(other, tmp_path / "other", steps=3)
    (tmp_path / "run" / "masks" / "masks.safetensors").replace(
        tmp_path / "other" / "masks.safetensors")
    with pytest.raises(UserError, match="unexpected gate 'conv.0'"):
        load_masks(tmp_path / "other")
