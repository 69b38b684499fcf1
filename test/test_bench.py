"""`sprune bench` and `sprune.benchmark`: the FLOP counter against hand counts, the table on
a tiny dense and a tiny shrunk upstream (columns and the ratios computed from them), and the
one-line errors."""
from __future__ import annotations

import json
import statistics

import pytest
import torch
from torch.nn import functional as F

from sprune.benchmark import count_flops, flop_count, parse_spec
from sprune.errors import UserError
from sprune.structured.masked import MaskedUpstream
from sprune.structured.shrink_from_masks import shrink_masked
from sprune.structured.structures import Structures
from sprune.upstream import UpstreamModel, save_upstream, tiny_config

SAMPLES = 8000  # 0.5 s
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_pair() -> tuple[UpstreamModel, UpstreamModel]:
    """A tiny dense upstream and its shrink with about half of every structure gated off."""
    torch.manual_seed(0)
    dense = UpstreamModel(tiny_config()).eval()
    masked = MaskedUpstream(dense, Structures(heads=True, conv_channels=True)).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for alpha in masked.gates.log_alphas().values():
            keep = torch.rand(alpha.shape, generator=generator) < 0.5
            keep.view(-1)[0] = True  # no block goes entirely
            alpha.copy_(torch.where(keep, torch.tensor(20.0), torch.tensor(-20.0)))
    shrunk = shrink_masked(masked).eval()
    masked.remove_hooks()
    return dense, shrunk


# --- the FLOP counter ---------------------------------------------------------------------
def test_linear_layer_flops_are_two_per_multiply_add():
    linear = torch.nn.Linear(48, 20)
    x = torch.randn(3, 7, 48)
    assert flop_count(lambda: linear(x)) == 2 * 3 * 7 * 48 * 20


def test_cpu_attention_is_counted():
    q, k, v = torch.randn(2, 4, 30, 16), torch.randn(2, 4, 50, 16), torch.randn(2, 4, 50, 8)
    assert flop_count(lambda: F.scaled_dot_product_attention(q, k, v)) == \
        2 * 2 * 4 * 30 * 50 * (16 + 8)


def test_tiny_upstream_flops_match_a_hand_count():
    torch.manual_seed(0)
    config = tiny_config()  # wav2vec2, group norm, no conv bias
    model = UpstreamModel(config).eval()
    flops, conv_flops = count_flops(model, torch.randn(1, SAMPLES))
    frames, channels_in, conv = SAMPLES, 1, 0
    for channels, kernel, stride in config.conv_layers:
        frames = (frames - kernel) // stride + 1
        conv += 2 * channels * channels_in * kernel * frames
        channels_in = channels
    dim, ffn, heads = config.embed_dim, config.layers[0].ffn_dim, config.num_heads
    projection = 2 * frames * channels_in * dim
    # an even positional kernel yields one extra frame (trimmed after the conv)
    pos_conv = 2 * dim * (dim // config.pos_conv_groups) * config.pos_conv_kernel * (frames + 1)
    layer = (4 * 2 * frames * dim * dim                         # q, k, v, out projections
             + 2 * heads * frames * frames * 2 * config.head_dim  # Q K^T and scores @ V
             + 2 * 2 * frames * dim * ffn)                      # FFN in and out
    assert conv_flops == conv
    assert flops == conv + projection + pos_conv + config.num_layers * layer


# --- the table ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    dense, shrunk = tiny_pair()
    root = tmp_path_factory.mktemp("bench")
    return (dense, save_upstream(dense, root / "dense"), shrunk,
            save_upstream(shrunk, root / "shrunk"))


def test_bench_table_of_dense_and_shrunk(cli, checkpoints, tmp_path):
    dense, dense_dir, shrunk, shrunk_dir = checkpoints
    result = cli("bench", "--upstream", f"dense={dense_dir}", "--upstream", f"shrunk={shrunk_dir}",
                 "--seconds", "0.5", "--repeat", "3", "--warmup", "1", "--threads", "1",
                 "--device", "cpu", "--json", tmp_path / "b.json", "--markdown", tmp_path / "b.md")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b.md").read_text() == result.stdout
    assert "| shrunk |" in result.stdout and "speed-up / FLOPs ratio" in result.stdout
    document = json.loads((tmp_path / "b.json").read_text())
    assert document["settings"]["threads"] == 1 and document["settings"]["devices"] == ["cpu"]
    first, second = document["models"]
    assert (first["name"], second["name"]) == ("dense", "shrunk")
    assert first["parameters"] == dense.num_parameters()
    assert second["parameters"] == shrunk.num_parameters() < dense.num_parameters()
    assert 0 < second["flops"] < first["flops"]
    assert 0 < second["conv_flops"] < first["conv_flops"] < first["flops"]
    assert second["parameters_ratio"] == pytest.approx(second["parameters"] / first["parameters"])
    assert second["flops_ratio"] == pytest.approx(first["flops"] / second["flops"])
    assert second["conv_flops_share"] == pytest.approx(second["conv_flops"] / second["flops"])
    cpu = [model["latency"]["cpu"] for model in document["models"]]
    for lat in cpu:
        assert len(lat["times_ms"]) == len(lat["conv_times_ms"]) == 3
        assert lat["median_ms"] == pytest.approx(statistics.median(lat["times_ms"]))
        assert lat["min_ms"] == pytest.approx(min(lat["times_ms"]))
        assert all(0 < c < t for c, t in zip(lat["conv_times_ms"], lat["times_ms"]))
    speedup = cpu[0]["median_ms"] / cpu[1]["median_ms"]
    assert cpu[1]["speedup"] == pytest.approx(speedup)
    assert cpu[1]["speedup_per_flops_ratio"] == pytest.approx(speedup / second["flops_ratio"])
    assert cpu[0]["speedup"] == cpu[0]["speedup_per_flops_ratio"] == 1.0


def test_bench_leaves_the_thread_count_alone(cli, checkpoints):
    torch.set_num_threads(2)
    result = cli("bench", "--upstream", f"dense={checkpoints[1]}", "--seconds", "0.1",
                 "--repeat", "1", "--warmup", "0", "--threads", "1", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert torch.get_num_threads() == 2


# --- bad input ----------------------------------------------------------------------------
def test_parse_spec():
    assert parse_spec("dense=exp/upstream") == ("dense", "exp/upstream")
    assert parse_spec("exp/prune/shrunk/") == ("shrunk", "exp/prune/shrunk/")
    spec = "torchaudio:wavlm:/m/wavlm.pt"
    assert parse_spec(spec) == ("wavlm.pt", spec)
    assert parse_spec("x=/m/w=1.pt") == ("x", "/m/w=1.pt")
    with pytest.raises(UserError, match="expected NAME=SPEC"):
        parse_spec("dense=")


@pytest.mark.parametrize("args, words", [
    (["--upstream", "=exp/upstream"], "expected NAME=SPEC"),
    (["--upstream", "a b=exp/upstream"], "expected NAME=SPEC"),
    (["--upstream", "dense=/no/such/upstream"], "--upstream dense: upstream checkpoint"),
    ([], "no --upstream given"),
    (["--upstream", "DENSE", "--repeat", "0"], "--repeat is 0"),
    (["--upstream", "DENSE", "--seconds", "0"], "--seconds is 0"),
    (["--upstream", "DENSE", "--seconds", "0.02"], "shorter than the receptive field"),
    (["--upstream", "DENSE", "--upstream", "DENSE"], "the name 'dense' is already used"),
    (["--upstream", "DENSE", "--device", "cpu", "--cuda-graphs"], "add --device cuda"),
])
def test_bad_input_is_one_line_exit_2(cli, checkpoints, args, words):
    args = [str(checkpoints[1]) if a == "DENSE" else a for a in args]
    result = cli("bench", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and words in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line_exit_2(cli, checkpoints):
    result = cli("bench", "--upstream", f"dense={checkpoints[1]}", "--device", "cuda")
    assert result.returncode == 2 and "no CUDA device" in result.stderr
    assert result.stderr.count("\n") == 1
