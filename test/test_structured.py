"""Structured L0 pruning (paper 004): structure config, masked forward, expected parameter
count, target ramp, Lagrangian control (a short real run), distillation, the Trainer task."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import Dataset

from sprune.data.dataset import collate_audio
from sprune.errors import UserError
from sprune.structured.distill import (LayerDistiller, align_layers, check_teacher_layers,
                                       default_teacher_layers)
from sprune.structured.masked import MaskedUpstream
from sprune.structured.shrink_from_masks import shrink_masked
from sprune.structured.sparsity import (LagrangianPenalty, ParameterBudget, parameter_count,
                                        target_sparsity_at)
from sprune.structured.structures import Structures, gate_shapes, resolve_hierarchy
from sprune.structured.task import SaveMasks, StructuredPruningConfig, StructuredPruningTask
from sprune.training import TrainConfig, Trainer
from sprune.upstream import UpstreamModel, tiny_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(family: str = "wav2vec2", **kwargs) -> UpstreamModel:
    torch.manual_seed(0)
    return UpstreamModel(tiny_config(family, **kwargs))


# --- the structure config ---------------------------------------------------------------------
def test_unknown_structure_is_a_user_error_listing_the_known_ones():
    with pytest.raises(UserError) as err:
        Structures.parse({"heads": True, "neurons": True}, "conf/l0.yaml: structures")
    message = str(err.value)
    assert "unknown structure 'neurons'" in message and "conf/l0.yaml" in message
    for name in Structures.names():
        assert name in message
    with pytest.raises(UserError, match="unknown structure 'rows'"):
        Structures.parse(["ffn_units", "rows"])
    with pytest.raises(UserError, match="unknown structure 'neurons'"):
        StructuredPruningConfig.from_dict({"structures": {"neurons": False}}, "conf/l0.yaml")


def test_structure_config_forms():
    assert Structures.parse(["ffn_units", "conv_channels"]).enabled() == [
        "ffn_units", "conv_channels"]
    parsed = Structures.parse({"conv_channels": True, "qk_dims": False})
    assert parsed.conv_channels and not parsed.qk_dims and parsed.vo_dims and not parsed.heads
    with pytest.raises(UserError, match="expected true or false"):
        Structures.parse({"heads": "yes"})
    config = StructuredPruningConfig.from_dict(
        {"structures": ["heads", "ffn_layers"], "target_sparsity": 0.3}, "conf/l0.yaml")
    assert config.structures.enabled() == ["heads", "ffn_layers"]
    with pytest.raises(UserError, match="unknown key 'sparsity'"):
        StructuredPruningConfig.from_dict({"sparsity": 0.3}, "conf/l0.yaml")
    with pytest.raises(UserError, match="init_keep_prob"):
        StructuredPruningConfig.from_dict({"init_keep_prob": 1.0}, "conf/l0.yaml")


def test_gate_layout_and_its_errors():
    config = tiny_config()
    shapes = gate_shapes(config, Structures(conv_channels=True))
    assert shapes["layers.0.qk"] == (4, 8) and shapes["layers.1.ffn_units"] == (64,)
    assert shapes["layers.1.attention"] == (1,) and shapes["conv.0"] == (32,)
    assert "conv.6" not in shapes  # the feature projection's LayerNorm reads all its channels
    with pytest.raises(UserError, match="no structure is switched on"):
        gate_shapes(config, Structures.parse([]))
    with pytest.raises(UserError, match="group-norm feature extractor"):
        gate_shapes(tiny_config(extractor_mode="layer_norm"), Structures(conv_channels=True))
    no_ffn = tiny_config()
    for layer in no_ffn.layers:
        layer.ffn_dim = 0
    with pytest.raises(UserError, match="find nothing to gate"):
        gate_shapes(no_ffn.validate(), Structures.parse(["ffn_units", "ffn_layers"]))
    frozen = UpstreamModel(config, freeze_feature_encoder=True)
    with pytest.raises(UserError, match="frozen"):
        MaskedUpstream(frozen, Structures(conv_channels=True))


# --- the masked forward -----------------------------------------------------------------------
def test_masked_forward_samples_in_training_and_is_fixed_in_eval():
    model = tiny()
    masked = MaskedUpstream(model, Structures(conv_channels=True), init_keep_prob=0.7)
    wavs = torch.randn(2, 2000)
    masked.train()
    assert not torch.equal(masked(wavs).hidden_states[-1], masked(wavs).hidden_states[-1])
    masked.eval()
    with torch.no_grad():
        assert torch.equal(masked(wavs).hidden_states[-1], masked(wavs).hidden_states[-1])
        # Called directly, the upstream runs unmasked; without hooks the wrapper does too.
        dense = model(wavs).hidden_states[-1]
        assert not torch.allclose(masked(wavs).hidden_states[-1], dense)
        masked.remove_hooks()
        assert torch.equal(masked(wavs).hidden_states[-1], dense)


def test_gate_gradients_flow_from_the_loss_and_the_sparsity():
    model = tiny()
    masked = MaskedUpstream(model, Structures(conv_channels=True)).train()
    out = masked(torch.randn(2, 2000))
    budget = ParameterBudget(model.config, masked.structures)
    loss = out.hidden_states[-1].pow(2).mean() + budget.expected_sparsity(
        masked.gates.probabilities())
    loss.backward()
    for name, alpha in masked.gates.log_alphas().items():
        assert alpha.grad is not None and alpha.grad.abs().sum() > 0, name


# --- parameter count and sparsity -------------------------------------------------------------
@pytest.mark.parametrize("family,extractor_mode,layer_norm_first,conv_bias", [
    ("wav2vec2", "group_norm", False, False), ("wavlm", "layer_norm", True, True),
    ("hubert", "group_norm", True, False), ("wavlm", "group_norm", False, True)])
def test_dense_count_is_the_model_size(family, extractor_mode, layer_norm_first, conv_bias):
    model = tiny(family, extractor_mode=extractor_mode, layer_norm_first=layer_norm_first,
                 conv_bias=conv_bias)
    assert float(parameter_count(model.config, {}).total) == model.num_parameters()


def test_expected_count_is_the_mean_count_of_sampled_hard_masks():
    config = tiny_config("wavlm", layer_norm_first=True)
    shapes = gate_shapes(config, Structures(conv_channels=True))
    generator = torch.Generator().manual_seed(0)
    probabilities = {name: 0.2 + 0.75 * torch.rand(shape, generator=generator)
                     for name, shape in shapes.items()}
    # One layer with few, unlikely heads, so whole-block removal happens often.
    probabilities["layers.1.heads"] = torch.full((4,), 0.3)
    probabilities["layers.1.attention"] = torch.tensor([0.5])
    expected = float(parameter_count(config, probabilities).total)
    draws = 1500
    total = 0.0
    for _ in range(draws):
        masks = {name: torch.bernoulli(p, generator=generator) for name, p in probabilities.items()}
        total += float(parameter_count(config, resolve_hierarchy(config, masks)).total)
    assert total / draws == pytest.approx(expected, rel=0.01)


def test_unreachable_target_names_the_largest_reachable_sparsity():
    config = tiny_config()
    budget = ParameterBudget(config, Structures.parse(["ffn_units"]))
    # Removing every FFN leaves the attention blocks: 2 * 4 * (32 * 32 + 32) of 16832.
    reachable = 1 - 2 * 4 * (32 * 32 + 32) / 16832
    assert budget.largest_reachable() == pytest.approx(reachable)
    with pytest.raises(UserError, match=f"largest reachable sparsity is {reachable:.4f}"):
        budget.check_target(0.6)
    budget.check_target(0.45)
    with pytest.raises(UserError, match="largest reachable sparsity is 0.4981"):
        StructuredPruningTask(tiny(), StructuredPruningConfig(
            structures=Structures.parse(["ffn_units"]), target_sparsity=0.6), total_steps=10)
    with pytest.raises(UserError, match="not a sparsity"):
        ParameterBudget(config, Structures()).check_target(1.0)
    # With conv channels the scope adds the extractor (17856 here). Each gated conv layer
    # keeps one channel and the last (ungated) its 32: 12 + 4 * 3 + 2 + 64 kernel and
    # norm parameters, plus the projection's LayerNorm (64) and weight (32 * 32) remain.
    everything = ParameterBudget(config, Structures(conv_channels=True))
    assert everything.dense_scope == 16832 + 17856
    assert everything.largest_reachable() == pytest.approx(1 - (90 + 64 + 1024) / 34688)


def test_target_ramps_over_the_first_seven_percent():
    assert target_sparsity_at(0, 1000, 0.8) == 0.0
    assert target_sparsity_at(35, 1000, 0.8) == pytest.approx(0.4)
    assert target_sparsity_at(70, 1000, 0.8) == 0.8
    assert target_sparsity_at(900, 1000, 0.8) == 0.8
    assert target_sparsity_at(5, 1000, 0.8, ramp_ratio=0.0) == 0.8


def test_lagrangian_is_ascended_on_the_lambdas():
    penalty = LagrangianPenalty()
    with torch.no_grad():
        penalty.lambda_1.fill_(0.5)
        penalty.lambda_2.fill_(2.0)
    expected = torch.tensor(0.3, requires_grad=True)
    term = penalty(expected, 0.5)
    assert term.item() == pytest.approx(0.5 * -0.2 + 2.0 * 0.04)
    term.backward()
    # Descent on these gradients is ascent on the term: -(p_hat - p), -(p_hat - p)^2.
    assert penalty.lambda_1.grad.item() == pytest.approx(0.2)
    assert penalty.lambda_2.grad.item() == pytest.approx(-0.04)
    # The sparsity gets the ordinary gradient: lambda_1 + 2 lambda_2 (p_hat - p).
    assert expected.grad.item() == pytest.approx(0.5 + 2 * 2.0 * -0.2)


class RandomAudio(Dataset):
    def __init__(self, count: int = 4) -> None:
        generator = torch.Generator().manual_seed(1)
        self.wavs = [0.1 * torch.randn(1600 + 400 * i, generator=generator) for i in range(count)]

    def __len__(self) -> int:
        return len(self.wavs)

    def __getitem__(self, index: int) -> dict:
        return {"wav": self.wavs[index]}


def test_lagrangian_brings_expected_sparsity_to_the_target(tmp_path):
    target, steps = 0.5, 300
    task = StructuredPruningTask(tiny(), StructuredPruningConfig(
        target_sparsity=target, mask_lr=0.05, lambda_lr=0.05), total_steps=steps)
    trainer = Trainer(task, RandomAudio(), collate_audio,
                      TrainConfig(max_steps=steps, batch_size=2, lr=1e-3, eval_every=10**6,
                                  save_every=10**6, log_every=10, device="cpu"),
                      tmp_path / "run", callbacks=[SaveMasks()], show_progress=False)
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").open()]
    train = [r for r in records if r["event"] == "train"]
    assert train[0]["target_sparsity"] < target           # still ramping at step 10
    assert train[-1]["target_sparsity"] == target
    assert abs(train[-1]["expected_sparsity"] - target) < 0.02
    assert abs(float(task.budget.expected_sparsity(task.student.gates.probabilities()).detach())
               - target) < 0.02
    # The gates and lambdas kept their fixed learning rates; the model followed the schedule.
    fixed = [g for g in trainer.optimizer.param_groups if "fixed_lr" in g]
    assert [g["lr"] for g in fixed] == [0.05, 0.05]
    assert all(g["lr"] < 1e-3 for g in trainer.optimizer.param_groups if "fixed_lr" not in g)
    # The run wrote its trained masks, which shrink to a smaller model.
    document = json.loads((tmp_path / "run" / "masks" / "masks.json").read_text())
    assert document["steps"] == steps
    shrunk = shrink_masked(task.student.eval())
    assert shrunk.num_parameters() < task.student.upstream.num_parameters()


# --- distillation -----------------------------------------------------------------------------
def test_align_layers_is_ordered_and_picks_the_closest():
    distances = torch.tensor([
        [0.1, 0.2, 0.9, 0.9, 0.9, 0.9],   # teacher layer a: closest is student layer 1
        [0.9, 0.9, 0.3, 0.1, 0.9, 0.9],   # b: student layer 4
        [0.9, 0.9, 0.9, 0.2, 0.9, 0.1],   # c: student layer 6
    ])
    assert align_layers(distances) == [1, 4, 6]
    # All three prefer student layer 6: the top takes it, the others go below in order.
    collide = torch.tensor([[0.5, 0.4, 0.3, 0.2, 0.1, 0.0]] * 3)
    assert align_layers(collide) == [4, 5, 6]
    # The lowest teacher layer cannot push the others out of room.
    low = torch.tensor([[0.0, 1, 1, 1], [0.0, 1, 1, 1], [0.0, 1, 1, 1]])
    assert align_layers(low) == [1, 2, 3]


def test_teacher_layer_defaults_and_errors():
    assert default_teacher_layers(12) == [3, 6, 9, 12]
    assert default_teacher_layers(2) == [1, 2]
    with pytest.raises(UserError, match="1..12"):
        check_teacher_layers([0, 4], 12, 12)
    with pytest.raises(UserError, match="at most 2"):
        check_teacher_layers([1, 2, 3], 12, 2)
    with pytest.raises(UserError, match="increasing"):
        check_teacher_layers([4, 2], 12, 12)


def test_distillation_loss_is_zero_for_student_equal_to_teacher():
    model = tiny("wavlm")
    wavs, lengths = torch.randn(2, 3000), torch.tensor([3000, 2200])
    with torch.no_grad():
        hidden = model(wavs, lengths)
    distiller = LayerDistiller([1, 2], 32)
    out = distiller(hidden.hidden_states, hidden.hidden_states, hidden.lengths)
    assert out.loss.item() == 0.0 and out.mapping == [1, 2]
    # Through the task: all gates on, eval masks keep everything, student == teacher.
    task = StructuredPruningTask(model, StructuredPruningConfig(target_sparsity=0.3),
                                 total_steps=10).eval()
    with torch.no_grad():
        for alpha in task.student.gates.log_alphas().values():
            alpha.fill_(10.0)
        result = task({"wavs": wavs, "lengths": lengths})
    assert result["distill"].item() == pytest.approx(0.0, abs=1e-10)
    # A different student is not at distance zero, and the loss trains the projections.
    distiller.train()
    shifted = [h + 0.5 for h in hidden.hidden_states]
    loss = distiller(shifted, hidden.hidden_states, hidden.lengths).loss
    assert loss.item() == pytest.approx(2 * 0.25, rel=1e-5)
    loss.backward()
    assert distiller.projections[0].bias.grad.abs().sum() > 0


def test_distillation_ignores_padded_frames():
    distiller = LayerDistiller([1], 4)
    teacher = [torch.zeros(1, 5, 4), torch.zeros(1, 5, 4)]
    student = [torch.zeros(1, 5, 4), torch.zeros(1, 5, 4)]
    student[1][0, 3:] = 7.0   # only padding differs
    out = distiller(student, teacher, torch.tensor([3]))
    assert out.loss.item() == 0.0


# --- the task as a Trainer model --------------------------------------------------------------
def test_task_keeps_the_teacher_out_of_its_parameters_and_checkpoints():
    task = StructuredPruningTask(tiny(), StructuredPruningConfig(target_sparsity=0.3),
                                 total_steps=10)
    assert not any(name.startswith("teacher") for name in task.state_dict())
    assert all(not p.requires_grad for p in task.teacher.parameters())
    task.to(torch.float64)
    assert next(task.teacher.parameters()).dtype == torch.float64
    groups = task.optimizer_groups(0.01)
    grouped = [p for g in groups for p in g["params"]]
    trainable = [p for p in task.parameters() if p.requires_grad]
    assert len(grouped) == len(trainable) and {id(p) for p in grouped} == {id(p) for p in trainable}
    gates = [g for g in groups if g.get("fixed_lr") == 0.02]
    assert all(g["weight_decay"] == 0.0 for g in gates) and len(gates) == 2
    task.train()
    task({"wavs": torch.randn(1, 2000, dtype=torch.float64), "lengths": torch.tensor([2000])})
    assert int(task.steps_done) == 1
