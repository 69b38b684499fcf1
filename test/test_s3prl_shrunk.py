"""Issue 6, "done when": s3prl's `S3PRLUpstream` loads a SHRUNK upstream and gives the same
hidden states as sprune's `load_upstream`.

A tiny random upstream gets hand-set structured gates (heads, query-key / value-output dims,
FFN units, conv channels; one attention block and one FFN removed whole), is shrunk through
`shrink_masked`, saved in sprune's format and loaded both ways.
"""
from __future__ import annotations

import pytest
import torch

from sprune.structured.masked import MaskedUpstream
from sprune.structured.shrink_from_masks import shrink_masked
from sprune.structured.structures import Structures
from sprune.upstream import UpstreamModel, load_upstream, save_upstream, tiny_config
from sprune.upstream.s3prl_bridge import import_s3prl, register

TOL = 1e-5
LENGTHS = torch.tensor([16000, 9123])
NUM_LAYERS = 3
pytestmark = pytest.mark.usefixtures("one_torch_thread")
ALL = Structures(qk_dims=True, vo_dims=True, heads=True, attention_layers=True, ffn_units=True,
                 ffn_layers=True, conv_channels=True)


def gates_by_hand(masked: MaskedUpstream) -> None:
    """About 60 % of every gate row on; layer 0 loses head 1, layer 1 its attention block,
    layer 2 its FFN."""
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, alpha in masked.gates.log_alphas().items():
            keep = torch.rand(alpha.shape, generator=generator) < 0.6
            keep.view(-1, alpha.shape[-1])[:, 0] = True  # every row keeps something ...
            if name in ("layers.1.attention", "layers.2.ffn"):
                keep[:] = False                           # ... except these blocks
            if name == "layers.0.heads":
                keep[1] = False                           # and one whole head goes
            alpha.copy_(torch.where(keep, torch.tensor(20.0), torch.tensor(-20.0)))


@pytest.fixture(scope="module")
def shrunk_checkpoint(tmp_path_factory):
    """(dense model, masked model, shrunk upstream dir)."""
    torch.manual_seed(0)
    dense = UpstreamModel(tiny_config("wav2vec2", num_layers=NUM_LAYERS)).eval()
    with torch.no_grad():  # biases and norms off their initial values, so removals matter
        for param in dense.parameters():
            param.add_(0.05 * torch.randn_like(param))
    masked = MaskedUpstream(dense, ALL).eval()
    gates_by_hand(masked)
    directory = save_upstream(shrink_masked(masked),
                              tmp_path_factory.mktemp("shrunk") / "upstream")
    return dense, masked, directory


def padded_batch() -> torch.Tensor:
    wavs = 0.3 * torch.randn(len(LENGTHS), int(LENGTHS.max()),
                             generator=torch.Generator().manual_seed(1))
    for i, length in enumerate(LENGTHS.tolist()):
        wavs[i, length:] = 0.0
    return wavs


def test_s3prl_upstream_loads_the_shrunk_model(shrunk_checkpoint):
    import_s3prl()
    from s3prl.nn import S3PRLUpstream

    dense, masked, directory = shrunk_checkpoint
    ours, config = load_upstream(str(directory))
    # the shrunk model really lost heads, head dims, FFN units, conv channels and two blocks
    before, after = dense.config, config
    assert after.layers[1].kept_heads == [] and after.layers[2].ffn_dim == 0
    assert len(after.layers[0].kept_heads) < len(before.layers[0].kept_heads)
    assert sum(after.layers[0].qk_dims) < sum(before.layers[0].qk_dims)
    assert after.layers[0].ffn_dim < before.layers[0].ffn_dim
    assert [c for c, _, _ in after.conv_layers[:-1]] < [c for c, _, _ in before.conv_layers[:-1]]
    assert ours.num_parameters() < dense.num_parameters()

    name = register("sprune_shrunk_test")
    upstream = S3PRLUpstream(name, path_or_url=str(directory)).eval()
    assert upstream.num_layers == NUM_LAYERS + 1
    assert upstream.downsample_rates == [320] * (NUM_LAYERS + 1)
    wavs = padded_batch()
    with torch.no_grad():
        all_hs, _ = upstream(wavs, LENGTHS)
        want = ours(wavs, LENGTHS)
        masked_out = masked(wavs, LENGTHS)
    assert len(all_hs) == len(want.hidden_states) == NUM_LAYERS + 1
    for got, expected, from_masks in zip(all_hs, want.hidden_states, masked_out.hidden_states):
        for b, valid in enumerate(want.lengths.tolist()):
            assert (got[b, :valid] - expected[b, :valid]).abs().max() <= TOL
            # and the shrunk model is the masked one (the path from the trained masks)
            assert (expected[b, :valid] - from_masks[b, :valid]).abs().max() <= 1e-4
