"""Mask: sparsity reports, set operations, fitting a model, save/load."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from sprune.errors import UserError
from sprune.prune.mask import Mask, layer_of


def _mask(**rows: list) -> Mask:
    return Mask({name.replace("__", "."): torch.tensor(value, dtype=torch.bool)
                 for name, value in rows.items()})


@pytest.fixture
def two_layer_mask() -> Mask:
    return Mask({
        "enc.layers.0.attention.q.weight": torch.tensor([[1, 0], [0, 0]], dtype=torch.bool),
        "enc.layers.0.ffn.in.weight": torch.tensor([[1, 1], [1, 0]], dtype=torch.bool),
        "enc.layers.1.attention.q.weight": torch.tensor([[1, 1], [1, 1]], dtype=torch.bool),
        "proj.weight": torch.tensor([0, 0, 0, 1], dtype=torch.bool),
    })


def test_sparsity_overall_per_parameter_layer_group(two_layer_mask: Mask) -> None:
    m = two_layer_mask
    assert m.numel() == 16 and m.num_kept() == 9
    assert m.sparsity() == pytest.approx(7 / 16)
    assert m.sparsity_per_parameter() == pytest.approx({
        "enc.layers.0.attention.q.weight": 0.75, "enc.layers.0.ffn.in.weight": 0.25,
        "enc.layers.1.attention.q.weight": 0.0, "proj.weight": 0.75})
    assert m.sparsity_per_layer() == pytest.approx(
        {"enc.layers.0": 0.5, "enc.layers.1": 0.0, "other": 0.75})
    by_first_word = m.sparsity_per_layer(lambda name: name.split(".")[0])
    assert by_first_word == pytest.approx({"enc": 4 / 12, "proj": 0.75})
    groups = {"attention": ["enc.layers.0.attention.q.weight",
                            "enc.layers.1.attention.q.weight"],
              "projection": ["proj.weight"], "not_masked": ["pos_conv.weight"]}
    assert m.sparsity_per_group(groups) == pytest.approx({"attention": 3 / 8,
                                                          "projection": 0.75})


def test_layer_of_needs_a_dot_before_layers() -> None:
    assert layer_of("encoder.transformer.layers.11.ffn.out.weight") == \
        "encoder.transformer.layers.11"
    assert layer_of("layers.2.attention.k.weight") == "layers.2"
    assert layer_of("feature_extractor.conv_layers.3.conv.weight") is None
    assert layer_of("proj.weight") is None


def test_ones_like_and_from_nonzero() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    ones = Mask.ones_like(model)
    assert list(ones) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert ones.sparsity() == 0.0 and ones["0.weight"].shape == (2, 3)
    assert list(Mask.ones_like(model, ["1.weight"])) == ["1.weight"]
    with torch.no_grad():
        model[0].weight[0] = 0
    actual = Mask.from_nonzero(model, ["0.weight"])
    assert actual["0.weight"].tolist() == [[False] * 3, [True] * 3]


def test_rejects_non_bool_tensors() -> None:
    with pytest.raises(TypeError, match="w"):
        Mask({"w": torch.ones(2)})


def test_iou_union_intersection_on_known_masks() -> None:
    a = _mask(w=[[1, 1, 0, 0]], b=[1, 0])
    b = _mask(w=[[1, 0, 1, 0]], b=[1, 1])
    assert a.intersection(b) == _mask(w=[[1, 0, 0, 0]], b=[1, 0])
    assert a.union(b) == _mask(w=[[1, 1, 1, 0]], b=[1, 1])
    # kept in both: w[0,0], b[0] = 2; kept in either: 3 + 2 = 5
    assert a.iou(b) == pytest.approx(2 / 5)
    assert a.iou(a) == 1.0
    nothing = _mask(w=[[0, 0, 0, 0]], b=[0, 0])
    assert nothing.iou(nothing) == 1.0
    assert a.iou(nothing) == 0.0


def test_set_operations_name_the_first_mismatch() -> None:
    a = _mask(w=[[1, 1]], b=[1])
    with pytest.raises(UserError, match="'b'.*one mask only"):
        a.iou(_mask(w=[[1, 1]]))
    with pytest.raises(UserError, match="'c'.*one mask only"):
        a.union(_mask(w=[[1, 1]], b=[1], c=[0]))
    with pytest.raises(UserError, match=r"'w' has shape \[1, 2\] in one mask and \[2, 1\]"):
        a.intersection(_mask(w=[[1], [1]], b=[1]))


def test_check_fits_names_missing_and_misshaped_parameters() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    Mask.ones_like(model).check_fits(model)
    other = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 5))
    with pytest.raises(UserError, match=r"another model: parameter '1.weight' has shape "
                                        r"\[5, 3\] in the model but \[2, 3\]"):
        Mask.ones_like(model).check_fits(other)
    with pytest.raises(UserError, match="another model: parameter '2.weight' is not in"):
        Mask({"2.weight": torch.ones(2, 2, dtype=torch.bool)}).check_fits(model)
    Mask.ones_like(model, ["0.weight"]).check_fits(dict(model.named_parameters()))


def test_save_load_round_trip_directory_with_report(tmp_path, two_layer_mask: Mask) -> None:
    groups = {"attention": ["enc.layers.0.attention.q.weight",
                            "enc.layers.1.attention.q.weight"]}
    written = two_layer_mask.save(tmp_path / "mask", groups=groups)
    assert written == tmp_path / "mask" / "mask.safetensors"
    assert sorted(p.name for p in (tmp_path / "mask").iterdir()) == ["mask.json",
                                                                    "mask.safetensors"]
    loaded = Mask.load(tmp_path / "mask")
    assert loaded == two_layer_mask
    assert list(loaded) == list(two_layer_mask)  # order survives (tie-break order)
    assert all(t.dtype == torch.bool for t in loaded.values())
    report = json.loads((tmp_path / "mask" / "mask.json").read_text())
    assert report["format"] == "sprune-mask"
    assert report["overall"] == {"kept": 9, "total": 16, "sparsity": pytest.approx(7 / 16)}
    assert report["per_layer"]["enc.layers.0"]["sparsity"] == pytest.approx(0.5)
    assert report["per_group"]["attention"] == {"kept": 5, "total": 8,
                                                "sparsity": pytest.approx(3 / 8)}
    assert report["per_parameter"]["proj.weight"] == {
        "shape": [4], "kept": 1, "total": 4, "sparsity": pytest.approx(0.75)}


def test_save_load_round_trip_file(tmp_path, two_layer_mask: Mask) -> None:
    path = tmp_path / "level3.safetensors"
    two_layer_mask.save(path)
    assert (tmp_path / "level3.json").is_file()
    assert Mask.load(path) == two_layer_mask
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("proj.weight").dtype == torch.uint8


def test_save_overwrites_atomically(tmp_path, two_layer_mask: Mask) -> None:
    two_layer_mask.save(tmp_path)
    Mask.ones_like(two_layer_mask).save(tmp_path)
    assert Mask.load(tmp_path).sparsity() == 0.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_load_bad_files_are_user_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="mask file not found"):
        Mask.load(tmp_path / "nowhere")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="junk.safetensors: not a readable"):
        Mask.load(tmp_path / "junk.safetensors")
    save_file({"w": torch.ones(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(UserError, match="not a sprune mask"):
        Mask.load(tmp_path / "weights.safetensors")
    save_file({"w": torch.tensor([0, 2], dtype=torch.uint8)}, str(tmp_path / "two.safetensors"),
              metadata={"format": "sprune-mask"})
    with pytest.raises(UserError, match="entry 'w' is not a 0/1 uint8 mask"):
        Mask.load(tmp_path / "two.safetensors")
