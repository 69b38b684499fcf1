"""The fused, pre-padded query-key-value projection of `SelfAttention` (used on CUDA without
autograd) computes what the four Linear calls compute, for equal and unequal head sizes,
follows weight changes, and steps aside for hooks and autograd. CI has no GPU, so the tests
force the fused path on the CPU by patching `_fusable`."""
from __future__ import annotations

import pytest
import torch

from sprune.upstream.attention import SelfAttention

HEAD_DIM = 8


def _attention(qk_dims: list[int], vo_dims: list[int], seed: int = 0) -> SelfAttention:
    torch.manual_seed(seed)
    return SelfAttention(32, HEAD_DIM, kept_heads=list(range(len(qk_dims))), qk_dims=qk_dims,
                         vo_dims=vo_dims, original_heads=4).eval()


def _both(attention: SelfAttention, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch,
          **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        plain = attention(x, **kwargs)
        monkeypatch.setattr(SelfAttention, "_fusable", lambda self, x: True)
        fused = attention(x, **kwargs)
        monkeypatch.undo()
    return plain, fused


@pytest.mark.parametrize("qk_dims, vo_dims", [([8, 8, 8, 8], [8, 8, 8, 8]),
                                              ([3, 8, 5], [6, 2, 8]), ([2], [7])])
def test_fused_projection_equals_the_linear_calls(qk_dims, vo_dims, monkeypatch):
    attention = _attention(qk_dims, vo_dims)
    x = torch.randn(2, 11, 32)
    padding = torch.zeros(2, 11, dtype=torch.bool)
    padding[1, 7:] = True
    plain, fused = _both(attention, x, monkeypatch, key_padding_mask=padding)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    weight, bias, out_weight = attention._fused_weights()
    size = attention.num_heads * attention.head_size
    assert weight.shape == (3 * size, 32) and bias.shape == (3 * size,)
    assert out_weight.shape == (32, size)
    if not attention.uniform:  # padded rows and columns are zero
        assert int((weight.abs().sum(1) > 0).sum()) <= 2 * sum(qk_dims) + sum(vo_dims)
        assert int((out_weight.abs().sum(0) > 0).sum()) <= sum(vo_dims)


def test_fused_weights_follow_in_place_and_replaced_weights(monkeypatch):
    attention = _attention([3, 8], [5, 4])
    x = torch.randn(1, 6, 32)
    _both(attention, x, monkeypatch)
    with torch.no_grad():
        attention.k_proj.weight.mul_(2.0)            # in place: version counter moves
    plain, fused = _both(attention, x, monkeypatch)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    attention.out_proj.weight = torch.nn.Parameter(torch.randn(32, 9))  # replaced
    plain, fused = _both(attention, x, monkeypatch)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)


def test_cache_built_under_inference_mode_serves_no_grad(monkeypatch):
    attention = _attention([3, 8], [5, 4])
    x = torch.randn(1, 6, 32)
    monkeypatch.setattr(SelfAttention, "_fusable", lambda self, x: True)
    with torch.inference_mode():
        first = attention(x)
    with torch.no_grad():
        second = attention(x)
    torch.testing.assert_close(second, first)


def test_weights_made_in_inference_mode_fuse_too(monkeypatch):
    with torch.inference_mode():
        attention = _attention([3, 8], [5, 4])      # its parameters are inference tensors
        x = torch.randn(1, 6, 32)
        plain, fused = _both(attention, x, monkeypatch)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)


def test_hooks_autograd_and_the_cpu_keep_the_linear_calls():
    attention = _attention([3, 8], [5, 4])
    assert not attention._fusable(torch.randn(1, 6, 32))        # CPU: never fused
    with torch.no_grad():
        assert attention._may_fuse()
    assert not attention._may_fuse()                             # autograd on
    handle = attention.q_proj.register_forward_hook(lambda *args: None)
    with torch.no_grad():
        assert not attention._may_fuse()                         # e.g. MaskedUpstream's hooks
    handle.remove()
    attention.register_forward_pre_hook(lambda *args: None)
    with torch.no_grad():
        assert not attention._may_fuse()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_shrunk_model_on_cuda_matches_the_cpu():
    """The real CUDA path (fused under no_grad) against the CPU's Linear calls."""
    from sprune.upstream import UpstreamModel, tiny_config

    attention = _attention([3, 8, 5], [6, 2, 8])
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        want = attention(x)
        on_cuda = attention.cuda()
        assert on_cuda._fusable(x.cuda())
        got = on_cuda(x.cuda()).cpu()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    model = UpstreamModel(tiny_config()).eval()
    wavs = 0.1 * torch.randn(1, 16000)
    with torch.inference_mode():
        want_states = model(wavs).hidden_states
        got_states = model.cuda()(wavs.cuda()).hidden_states
    for got_state, want_state in zip(got_states, want_states):
        torch.testing.assert_close(got_state.cpu(), want_state, rtol=1e-3, atol=1e-4)
