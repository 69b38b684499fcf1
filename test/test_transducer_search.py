"""sprune's batched transducer search against ESPnet's, a brute-force search and hand sums;
the LM prefix tree against whole-prefix LM passes."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from espnet2.asr.decoder.transducer_decoder import TransducerDecoder
from espnet2.asr_transducer.joint_network import JointNetwork

from sprune.decode.espnet_reference import EspnetTransducerSearch
from sprune.decode.lm_tree import LMPrefixTree
from sprune.decode.transducer_search import FusionWeights, TransducerSearch
from sprune.lm.config import LMConfig
from sprune.lm.model import TransformerLM

D = 6   # encoder output size


def randomised(module: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return module.eval()


def transducer(vocab: int, seed: int = 0, rnn_type: str = "lstm"):
    torch.manual_seed(seed)
    decoder = randomised(TransducerDecoder(vocab, rnn_type=rnn_type, hidden_size=8, embed_pad=0),
                         seed, 0.7)
    joint = randomised(JointNetwork(vocab, D, 8, joint_space_size=10), seed + 1, 0.9)
    return decoder, joint


def lm(vocab: int, seed: int = 0, **sizes) -> TransformerLM:
    torch.manual_seed(seed)
    config = LMConfig(**{**dict(vocab_size=vocab, embed_dim=8, d_model=12, heads=2, ffn_dim=16,
                                layers=2), **sizes})
    return randomised(TransformerLM(config), seed, 0.5)


def encoder_output(batch: int, frames: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, frames, D, generator=torch.Generator().manual_seed(seed)) * 1.5


class Bigram:
    """A random token bigram with the interface the search reads."""

    def __init__(self, vocab: int, seed: int) -> None:
        self.vocab_size = vocab
        logits = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed))
        self.table = logits.log_softmax(-1)

    def next_log_probs(self, last: torch.Tensor) -> torch.Tensor:
        return self.table[last]


# -- hand computations -------------------------------------------------------------------------
@torch.no_grad()
def am_log_probs(decoder, joint, enc_t: torch.Tensor, prefix: list[int]) -> torch.Tensor:
    """log P(. | frame, prefix) [V] from the whole prefix (no state reuse)."""
    dec = decoder(torch.tensor([[0] + prefix]))[0, -1]
    return joint(enc_t, dec).log_softmax(-1)


@torch.no_grad()
def lm_log_probs(model: TransformerLM, prefix: list[int]) -> torch.Tensor:
    """log P_lm(. | <sos> prefix) [V] from one uncached pass."""
    return model.logits(torch.tensor([[model.sos_eos] + prefix]))[0, -1].log_softmax(-1)


def fused_token_score(prefix, k, lm_model, lm_weight, bigram, lodr_weight, bonus):
    extra = bonus
    if lm_model is not None:
        extra += lm_weight * float(lm_log_probs(lm_model, prefix)[k])
    if bigram is not None:
        last = prefix[-1] if prefix else bigram.vocab_size - 1
        extra -= lodr_weight * float(bigram.table[last, k])
    return extra


def brute_force(decoder, joint, enc: torch.Tensor, lm_model=None, lm_weight=0.0, bigram=None,
                lodr_weight=0.0, bonus=0.0) -> tuple[list[int], float]:
    """Best label sequence over every path of at most one symbol per frame, the transducer
    part of its score log-added over its paths."""
    vocab = decoder.odim
    totals: dict[tuple, list[float]] = {}
    memo: dict[tuple, torch.Tensor] = {}
    for path in itertools.product(range(vocab), repeat=enc.shape[0]):
        prefix, am = [], 0.0
        for t, k in enumerate(path):
            if (t, *prefix) not in memo:
                memo[(t, *prefix)] = am_log_probs(decoder, joint, enc[t], prefix)
            am += float(memo[(t, *prefix)][k])
            if k:
                prefix = prefix + [k]
        totals.setdefault(tuple(prefix), []).append(am)
    scored = {}
    for labels, ams in totals.items():
        fusion = sum(fused_token_score(list(labels[:i]), k, lm_model, lm_weight, bigram,
                                       lodr_weight, bonus) for i, k in enumerate(labels))
        scored[labels] = torch.tensor(ams).logsumexp(0).item() + fusion
    best = max(scored, key=scored.get)
    return list(best), scored[best]


# -- tests ---------------------------------------------------------------------------------------
def test_prefix_tree_log_probs_equal_whole_prefix_passes():
    model = lm(11, layer_heads=[2, 0], heads=2)    # block 1 has no attention left
    tree = LMPrefixTree(model)
    assert torch.allclose(tree.log_probs[0], lm_log_probs(model, []), atol=1e-5)
    # extend ragged paths that share nodes: [3], [5], then [3, 7], [5, 2], [3, 7, 9]
    a, b = tree.extend(torch.tensor([3, 5]), torch.zeros(2, 1, dtype=torch.long), torch.tensor([1, 1]))
    c, d = tree.extend(torch.tensor([7, 2]), torch.tensor([[0, a], [0, b]]), torch.tensor([2, 2]))
    (e,) = tree.extend(torch.tensor([9]), torch.tensor([[0, a, c]]), torch.tensor([3]))
    for node, prefix in ((a, [3]), (b, [5]), (c, [3, 7]), (d, [5, 2]), (e, [3, 7, 9])):
        assert torch.allclose(tree.log_probs[node], lm_log_probs(model, prefix), atol=1e-5)
    # one call with paths of different lengths (padding must not leak)
    f, g = tree.extend(torch.tensor([4, 4]), torch.tensor([[0, a, c, e], [0, b, 0, 0]]),
                       torch.tensor([4, 2]))
    assert torch.allclose(tree.log_probs[f], lm_log_probs(model, [3, 7, 9, 4]), atol=1e-5)
    assert torch.allclose(tree.log_probs[g], lm_log_probs(model, [5, 4]), atol=1e-5)


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_greedy_agrees_with_espnet(rnn_type):
    decoder, joint = transducer(12, seed=3, rnn_type=rnn_type)
    enc = encoder_output(4, 20, seed=4)
    lengths = torch.tensor([20, 13, 17, 5])
    ours = TransducerSearch(decoder, joint, beam=1)(enc, lengths)
    theirs = EspnetTransducerSearch(decoder, joint, beam=1)(enc, lengths)
    assert [r.tokens for r in ours] == [r.tokens for r in theirs]
    assert any(r.tokens for r in ours)            # the random model does emit
    # (ESPnet's greedy score leaves out the blanks' log-probs: scores are not compared)


@pytest.mark.parametrize("weights", [FusionWeights(),
                                     FusionWeights(lm_weight=0.7, lodr_weight=0.3, length_bonus=0.2),
                                     FusionWeights(blank_penalty=0.5)])
def test_wide_beam_finds_the_brute_force_best(weights):
    vocab = 3
    decoder, joint = transducer(vocab, seed=5)
    lm_model, bigram = lm(vocab, seed=6), Bigram(vocab, seed=7)
    enc = encoder_output(2, 4, seed=8)
    search = TransducerSearch(decoder, joint, beam=32, lm=lm_model, lodr=bigram, weights=weights)
    results = search(enc, torch.tensor([4, 3]))
    if weights.blank_penalty:   # the penalty lowers the blank logit before the softmax
        joint_penalised = _with_blank_penalty(joint, weights.blank_penalty)
    else:
        joint_penalised = joint
    for b, length in enumerate((4, 3)):
        tokens, score = brute_force(decoder, joint_penalised, enc[b, :length],
                                    lm_model if weights.lm_weight else None, weights.lm_weight,
                                    bigram if weights.lodr_weight else None, weights.lodr_weight,
                                    weights.length_bonus)
        assert results[b].tokens == tokens
        assert results[b].score == pytest.approx(score, abs=1e-4)


def _with_blank_penalty(joint, penalty):
    class Penalised(torch.nn.Module):
        def forward(self, enc, dec):
            out = joint(enc, dec).clone()
            out[..., 0] -= penalty
            return out
    return Penalised()


def test_beam_one_fusion_score_is_the_hand_sum():
    vocab = 9
    decoder, joint = transducer(vocab, seed=9)
    lm_model, bigram = lm(vocab, seed=10), Bigram(vocab, seed=11)
    weights = FusionWeights(lm_weight=0.5, lodr_weight=0.2, length_bonus=0.1)
    enc = encoder_output(1, 12, seed=12)
    result = TransducerSearch(decoder, joint, beam=1, lm=lm_model, lodr=bigram,
                              weights=weights)(enc, torch.tensor([12]))[0]
    prefix, am, lm_sum, lodr_sum = [], 0.0, 0.0, 0.0
    for t in range(12):
        logp = am_log_probs(decoder, joint, enc[0, t], prefix)
        lm_logp = lm_log_probs(lm_model, prefix)
        lodr_logp = bigram.table[prefix[-1] if prefix else vocab - 1]
        fused = logp.clone()
        fused[1:] += 0.5 * lm_logp[1:] - 0.2 * lodr_logp[1:] + 0.1
        k = int(fused.argmax())
        am += float(logp[k])
        if k:
            lm_sum += float(lm_logp[k])
            lodr_sum += float(lodr_logp[k])
            prefix.append(k)
    assert prefix and result.tokens == prefix
    assert result.score == pytest.approx(am + 0.5 * lm_sum - 0.2 * lodr_sum + 0.1 * len(prefix),
                                         abs=1e-4)


def test_batch_equals_one_utterance_at_a_time():
    vocab = 10
    decoder, joint = transducer(vocab, seed=13)
    lm_model = lm(vocab, seed=14)
    enc = encoder_output(3, 15, seed=15)
    lengths = torch.tensor([9, 15, 4])
    search = TransducerSearch(decoder, joint, beam=4, lm=lm_model,
                              weights=FusionWeights(lm_weight=0.4))
    together = search(enc, lengths)
    for b in range(3):
        alone = search(enc[b:b + 1, :int(lengths[b])], lengths[b:b + 1])[0]
        assert alone.tokens == together[b].tokens
        assert alone.score == pytest.approx(together[b].score, abs=1e-4)


def test_espnet_beam_search_takes_the_sprune_lm():
    vocab = 10
    decoder, joint = transducer(vocab, seed=16)
    with torch.no_grad():   # ESPnet's search expands for long on a model without a blank habit
        joint.lin_out.bias[0] += 3.0
    lm_model = lm(vocab, seed=17)
    enc = encoder_output(2, 8, seed=18)
    lengths = torch.tensor([8, 6])
    plain = EspnetTransducerSearch(decoder, joint, beam=3)(enc, lengths)
    fused = EspnetTransducerSearch(decoder, joint, beam=3, lm=lm_model, lm_weight=2.0)(enc, lengths)
    assert all(math.isfinite(r.score) for r in plain + fused)
    assert [r.tokens for r in plain] != [r.tokens for r in fused]   # a heavy LM changes them


def test_search_refuses_an_lm_of_another_vocabulary():
    decoder, joint = transducer(10)
    with pytest.raises(ValueError, match="LM has 12 tokens, the transducer 10"):
        TransducerSearch(decoder, joint, lm=lm(12), weights=FusionWeights(lm_weight=0.3))


def test_integer_weights_are_taken_as_numbers():
    """FusionWeights(length_bonus=2) (an int, as a Python caller may write it) scores as 2.0."""
    vocab = 8
    decoder, joint = transducer(vocab, seed=19)
    lm_model = lm(vocab, seed=20)
    enc = encoder_output(1, 6, seed=21)
    as_int = TransducerSearch(decoder, joint, beam=2, lm=lm_model,
                              weights=FusionWeights(lm_weight=1, length_bonus=2))(enc, torch.tensor([6]))
    as_float = TransducerSearch(decoder, joint, beam=2, lm=lm_model,
                                weights=FusionWeights(lm_weight=1.0, length_bonus=2.0))(enc, torch.tensor([6]))
    assert as_int[0].tokens == as_float[0].tokens
    assert as_int[0].score == pytest.approx(as_float[0].score)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reading_the_lm_only_when_needed_changes_nothing(seed):
    """The LM reads a hypothesis' last token only when one of its extensions could enter the
    beam (its bound beats the beam-th known candidate); the result equals reading every
    emitted token at once."""
    vocab = 12
    decoder, joint = transducer(vocab, seed=30 + seed)
    with torch.no_grad():
        joint.lin_out.bias[0] += 2.0     # mostly blanks, as a trained transducer
    lm_model, bigram = lm(vocab, seed=40 + seed), Bigram(vocab, seed=50 + seed)
    enc = encoder_output(3, 30, seed=60 + seed)
    lengths = torch.tensor([30, 22, 17])
    weights = FusionWeights(lm_weight=0.6, lodr_weight=0.2, length_bonus=1.0)
    lazy = TransducerSearch(decoder, joint, beam=4, lm=lm_model, lodr=bigram, weights=weights)
    eager = TransducerSearch(decoder, joint, beam=4, lm=lm_model, lodr=bigram, weights=weights)
    eager.lazy_lm = False
    for a, b in zip(lazy(enc, lengths), eager(enc, lengths)):
        assert a.tokens == b.tokens
        assert a.score == pytest.approx(b.score, abs=1e-4)
