"""CTC task: decoding on hand-made posteriors, beam search exactness, the model's loss, batch
collation, too-short audio, evaluation with WER/CER/PER, and training through the Trainer."""
from __future__ import annotations

import itertools
import json
import math
from types import SimpleNamespace

import jiwer
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sprune.data.dataset import AudioDataset
from sprune.data.datadir import DataDir
from sprune.data.tokenizer import build_tokenizer
from sprune.errors import UserError
from sprune.tasks.ctc import (CTCCollate, CTCModel, decode_dataset, evaluate_ctc,
                              required_frames)
from sprune.decode.ctc_reference import beam_search_batch, prefix_beam_search
from sprune.tasks.ctc_decode import (CTCTaskDecoder, collapse, greedy_decode,
                                     greedy_decode_batch, prune_units)
from sprune.training import TrainConfig, Trainer

SAMPLES_PER_FRAME = 80


def log_probs_of(rows: list[list[float]]) -> torch.Tensor:
    """Probabilities per frame (rows sum to 1) -> log-probs [T, V]."""
    return torch.tensor(rows, dtype=torch.float64).log()


def exact_log_likelihood(log_probs: torch.Tensor, labels: list[int]) -> float:
    """log P(labels | x) summed over all alignments, via torch's CTC loss. log_probs [T, V]."""
    loss = F.ctc_loss(log_probs[:, None, :], torch.tensor([labels], dtype=torch.long),
                      torch.tensor([log_probs.shape[0]]), torch.tensor([len(labels)]),
                      blank=0, reduction="sum")
    return -float(loss)


# ---- decoding ---------------------------------------------------------------------------

def test_collapse_and_greedy_on_hand_made_posteriors():
    assert collapse([1, 1, 0, 1, 2, 2, 0, 0]) == [1, 1, 2]
    #            blank  a    b
    rows = [[0.1, 0.8, 0.1],   # a
            [0.2, 0.7, 0.1],   # a (repeat, merged)
            [0.6, 0.3, 0.1],   # blank
            [0.3, 0.6, 0.1],   # a again after a blank: a new label
            [0.1, 0.1, 0.8],   # b
            [0.9, 0.05, 0.05]]
    assert greedy_decode(log_probs_of(rows)) == [1, 1, 2]


def test_beam_finds_the_labelling_greedy_misses():
    # Best path is blank-blank (0.36) but the labelling "a" has 0.16 + 0.24 + 0.24 = 0.64.
    lp = log_probs_of([[0.6, 0.4], [0.6, 0.4]])
    assert greedy_decode(lp) == []
    best = prefix_beam_search(lp, beam=4)[0]
    assert best.labels == [1]
    assert best.log_likelihood == pytest.approx(math.log(0.64))
    assert best.log_likelihood > exact_log_likelihood(lp, greedy_decode(lp))


def test_beam_on_a_longer_hand_made_case():
    # Blank wins every frame (greedy: nothing), yet some labelling is more likely than the
    # all-blank one; the beam must return the most likely of all labellings, found by brute force.
    lp = log_probs_of([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.4, 0.2, 0.4], [0.5, 0.2, 0.3]])
    hyps = prefix_beam_search(lp, beam=4)
    every = {tuple(lab) for n in range(5) for lab in itertools.product([1, 2], repeat=n)}
    exact = {lab: exact_log_likelihood(lp, list(lab)) if lab else
             float(lp[:, 0].sum()) for lab in every}
    best = max(exact, key=exact.get)
    assert tuple(hyps[0].labels) == best == (1, 2)
    assert hyps[0].log_likelihood == pytest.approx(exact[best])
    assert greedy_decode(lp) == []


def test_beam_likelihoods_are_exact_sums_over_alignments():
    torch.manual_seed(0)
    lp = torch.randn(5, 3, dtype=torch.float64).log_softmax(-1)
    hyps = prefix_beam_search(lp, beam=10_000)
    # No prefix was dropped: every labelling of length <= 5 over 2 labels (63 of them) appears.
    assert len(hyps) == sum(2 ** n for n in range(6))
    for h in hyps:
        expected = exact_log_likelihood(lp, h.labels) if h.labels else float(lp[:, 0].sum())
        assert h.log_likelihood == pytest.approx(expected, abs=1e-9)
        assert h.score == h.log_likelihood
    assert sum(math.exp(h.log_likelihood) for h in hyps) == pytest.approx(1.0)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


@pytest.mark.parametrize("seed", range(8))
def test_beam_likelihood_is_at_least_greedy(seed):
    gen = torch.Generator().manual_seed(seed)
    lp = (torch.randn(40, 6, generator=gen, dtype=torch.float64) * 2).log_softmax(-1)
    greedy_path_ll = float(lp.max(-1).values.sum())   # the one alignment greedy decoding scores
    best = prefix_beam_search(lp, beam=8)[0]
    assert best.log_likelihood >= greedy_path_ll
    # the beam's score sums the alignments it kept: a lower bound of the exact likelihood
    assert best.log_likelihood <= exact_log_likelihood(lp, best.labels) + 1e-9


def test_prune_threshold_and_lm_hook():
    lp = log_probs_of([[0.6, 0.4], [0.6, 0.4]])
    # pruning away "a" (p=0.4 < 0.5) leaves only blank paths
    assert prefix_beam_search(lp, beam=4, prune=0.5)[0].labels == []
    # the most likely label is always tried, even under a threshold nothing reaches
    assert prefix_beam_search(log_probs_of([[0.3, 0.7]]), prune=0.9)[0].labels == [1]
    calls = []

    def penalise_a(prefix, label):
        calls.append((prefix, label))
        return -10.0 if label == 1 else 0.0

    best = prefix_beam_search(lp, beam=4, lm_scorer=penalise_a)[0]
    assert best.labels == [] and best.score == pytest.approx(math.log(0.36))
    assert ((), 1) in calls
    rescored = {tuple(h.labels): h for h in prefix_beam_search(lp, beam=4, lm_scorer=penalise_a)}
    assert rescored[(1,)].score == pytest.approx(math.log(0.64) - 10.0)
    assert rescored[(1,)].log_likelihood == pytest.approx(math.log(0.64))


def test_batch_decoders_ignore_padding_frames():
    a = [[0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]     # "a b"
    b = [[0.1, 0.1, 0.8], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1]]     # "b" + a padding frame "a"
    lp = torch.stack([log_probs_of(a), log_probs_of(b)]).float()
    lengths = torch.tensor([3, 2])
    assert greedy_decode_batch(lp, lengths) == [[1, 2], [2]]
    assert greedy_decode_batch(lp) == [[1, 2], [2, 1]]
    beams = beam_search_batch(lp, lengths, beam=4)
    assert [h[0].labels for h in beams] == [[1, 2], [2]]
    tok = build_tokenizer("char", ["a b"])     # <blank>, |, a, b: ids 2, 3 are a, b
    lp4 = torch.cat([torch.full((2, 3, 1), -30.0), lp], dim=-1)   # no '|' ever
    lp4 = lp4[..., [1, 0, 2, 3]].log_softmax(-1)   # blank first, then '|', a, b
    assert CTCTaskDecoder(tok, "beam", beam=4)(lp4, lengths) == ["ab", "b"]
    assert CTCTaskDecoder(tok, "greedy")(lp4, lengths) == ["ab", "b"]
    with pytest.raises(UserError, match="unknown CTC decoder 'viterbi'"):
        CTCTaskDecoder(tok, "viterbi")


def test_prune_units_keeps_likely_units_and_the_best():
    lp = log_probs_of([[0.6, 0.4], [0.3, 0.7]])[None].float()
    pruned = prune_units(lp, 0.5)
    assert pruned[0, 0, 1] < -1e29 and pruned[0, 0, 0] == lp[0, 0, 0]
    assert pruned[0, 1, 1] == lp[0, 1, 1]
    assert prune_units(log_probs_of([[0.3, 0.7]])[None], 0.9)[0, 0, 1] > -1
    assert torch.equal(prune_units(lp, None), lp)


# ---- the model ------------------------------------------------------------------------

class FakeUpstream(nn.Module):
    """Frames of 80 samples projected to 8 dims; `hidden_states` has two entries."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.proj = nn.Linear(SAMPLES_PER_FRAME, dim)

    def forward(self, wavs, lengths):
        n = wavs.shape[1] // SAMPLES_PER_FRAME
        frames = wavs[:, :n * SAMPLES_PER_FRAME].reshape(wavs.shape[0], n, SAMPLES_PER_FRAME)
        h = torch.tanh(self.proj(frames * 10))
        return SimpleNamespace(hidden_states=[frames[..., :8], h],
                               lengths=lengths // SAMPLES_PER_FRAME)


def make_batch(texts, samples, tokenizer):
    gen = torch.Generator().manual_seed(0)
    items = [{"wav": torch.randn(n, generator=gen) * 0.1, "utt": f"utt{i}", "text": text}
             for i, (text, n) in enumerate(zip(texts, samples))]
    return CTCCollate(tokenizer)(items)


def test_collate_pads_targets():
    tok = build_tokenizer("char", ["ab ba"])
    batch = make_batch(["ab", "ba ab"], [800, 1600], tok)
    a, b, sep = (tok.vocab.index(s) for s in ("a", "b", "|"))
    assert batch["targets"].tolist() == [[a, b, 0, 0, 0], [b, a, sep, a, b]]
    assert batch["target_lengths"].tolist() == [2, 5]
    assert batch["wavs"].shape == (2, 1600) and batch["lengths"].tolist() == [800, 1600]


def test_required_frames_counts_repeats():
    targets = torch.tensor([[1, 1, 2, 0], [3, 3, 3, 3], [4, 0, 0, 0]])
    assert required_frames(targets, torch.tensor([3, 2, 1])).tolist() == [4, 3, 1]


def test_model_loss_matches_torch_and_trains():
    torch.manual_seed(0)
    tok = build_tokenizer("char", ["abc cab", "bca"])
    batch = make_batch(["abc cab", "bca", "cc a"], [2400, 1600, 2000], tok)
    model = CTCModel(FakeUpstream(), embed_dim=8, vocab_size=tok.vocab_size, dropout=0.0)
    out = model(batch)
    log_probs, frames = model.log_probs(batch["wavs"], batch["lengths"])
    assert log_probs.shape == (3, 30, tok.vocab_size) and frames.tolist() == [30, 20, 25]
    per_utt = F.ctc_loss(log_probs.transpose(0, 1), batch["targets"], frames,
                         batch["target_lengths"], reduction="none")
    expected = per_utt.sum() / batch["target_lengths"].sum()
    assert float(out["loss"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    out["loss"].backward()
    assert model.upstream.proj.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = model(batch)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0]
    # it has memorised the three utterances: greedy decoding spells them back
    log_probs, frames = model.log_probs(batch["wavs"], batch["lengths"])
    assert [tok.decode(ids) for ids in greedy_decode_batch(log_probs, frames)] == [
        "abc cab", "bca", "cc a"]


def test_layer_choice_selects_the_hidden_state():
    tok = build_tokenizer("char", ["ab"])
    batch = make_batch(["ab"], [800], tok)
    model = CTCModel(FakeUpstream(), embed_dim=8, vocab_size=tok.vocab_size, layer=0)
    model(batch)["loss"].backward()
    assert model.upstream.proj.weight.grad is None   # layer 0 does not go through proj


def test_audio_too_short_for_the_transcript_is_a_user_error():
    tok = build_tokenizer("char", ["hello helo"])
    model = CTCModel(FakeUpstream(), embed_dim=8, vocab_size=tok.vocab_size)
    # 400 samples = 5 frames; "helo" needs 4 and fits, "hello" needs 5 labels + 1 repeat = 6.
    ok = make_batch(["helo", "helo"], [400, 400], tok)
    assert math.isfinite(float(model(ok)["loss"].detach()))
    exact = make_batch(["hel", "hello"], [400, 480], tok)           # 6 frames for 6 needed
    assert math.isfinite(float(model(exact)["loss"].detach()))
    short = make_batch(["helo", "hello"], [400, 400], tok)
    with pytest.raises(UserError, match=r"utterance 'utt1': audio too short for its transcript "
                                        r"under CTC: 5 frames but its 5 labels need 6"):
        model(short)


def test_out_of_vocabulary_transcript_names_the_utterance():
    tok = build_tokenizer("char", ["one two"])
    with pytest.raises(UserError, match=r"utterance 'utt1': char symbols 'h' .*'r' .*'é'"):
        make_batch(["one", "thrée"], [800, 800], tok)
    items = [{"wav": torch.zeros(800), "utt": "u7", "text": "one"}]
    with pytest.raises(UserError, match=r"^data/train/text \(u7\): char symbols 'x'"):
        CTCCollate(tok, source="data/train/text")([{**items[0], "text": "onex"}])
    with pytest.raises(UserError, match="'u7': the transcript is empty"):
        CTCCollate(tok)([{**items[0], "text": "?!"}])
    with pytest.raises(UserError, match="no transcript"):
        CTCCollate(tok)([{"wav": torch.zeros(800), "utt": "u7"}])


# ---- evaluation ---------------------------------------------------------------------------

class OracleCTC(nn.Module):
    """Emits peaky posteriors spelling a chosen text per utterance (keyed by sample count)."""

    def __init__(self, tokenizer, text_by_samples):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.tokenizer, self.text_by_samples = tokenizer, text_by_samples

    def log_probs(self, wavs, lengths):
        frames = lengths // SAMPLES_PER_FRAME
        vocab = self.tokenizer.vocab_size
        probs = torch.full((len(lengths), int(frames.max()), vocab), 0.1 / (vocab - 1))
        probs[..., 0] = 0.9
        for b, n in enumerate(lengths.tolist()):
            for j, label in enumerate(self.tokenizer.encode(self.text_by_samples[n])):
                probs[b, 2 * j] = 0.1 / (vocab - 1)
                probs[b, 2 * j, label] = 0.9
        return probs.log(), frames


def oracle_setup(tmp_path, make_data_dir):
    path = make_data_dir(tmp_path, n_utts=6, langs=("en-US", "fr-FR"),
                         seconds=(0.25, 0.3, 0.35, 0.4, 0.45, 0.5))
    data = DataDir.load(path)
    dataset = AudioDataset(data, preload=True)
    tok = build_tokenizer("char", data.text.values())
    samples = {utt: len(dataset[i]["wav"]) for i, utt in enumerate(dataset.utts)}
    return data, dataset, tok, samples


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_evaluate_ctc_scores_oracle_and_corrupted_decodings(tmp_path, make_data_dir, decoder):
    data, dataset, tok, samples = oracle_setup(tmp_path, make_data_dir)
    perfect = OracleCTC(tok, {samples[u]: data.text[u] for u in data.utt_ids})
    scores = evaluate_ctc(perfect, dataset, tok, decoder=decoder, beam=4, batch_size=4)
    assert scores == {"cer": 0.0, "cer/en-US": 0.0, "cer/fr-FR": 0.0,
                      "wer": 0.0, "wer/en-US": 0.0, "wer/fr-FR": 0.0}
    # Replace the first word of the first English utterance by another known word.
    first = next(u for u in data.utt_ids if data.utt2lang[u] == "en-US")
    ref_words = data.text[first].split()
    wrong = "ten" if ref_words[0] != "ten" else "one"
    hyps = {samples[u]: data.text[u] for u in data.utt_ids}
    hyps[samples[first]] = " ".join([wrong, *ref_words[1:]])
    scores = evaluate_ctc(OracleCTC(tok, hyps), dataset, tok, decoder=decoder, beam=4)
    assert scores["wer"] == pytest.approx(1 / 18) and scores["wer/en-US"] == pytest.approx(1 / 9)
    assert scores["wer/fr-FR"] == 0.0
    en = [u for u in data.utt_ids if data.utt2lang[u] == "en-US"]
    refs = [data.text[u] for u in en]
    expected_cer = jiwer.cer(refs, [hyps[samples[u]] for u in en])
    assert scores["cer/en-US"] == pytest.approx(expected_cer)
    decoded = decode_dataset(OracleCTC(tok, hyps), dataset, tok, decoder=decoder)
    assert [d.utt for d in decoded] == dataset.utts
    assert next(d for d in decoded if d.utt == first).hyp.startswith(wrong + " ")


def test_evaluate_ctc_fuses_a_unit_ngram_from_the_config_keys(tmp_path, make_data_dir):
    """ctc.kenlm / ctc.lm_weight reach the beam search: weight 0 decodes as without the LM,
    an overwhelming weight lets the character n-gram (of the texts spelt backwards) rewrite the
    oracle's spelling."""
    from sprune.decode.arpa import train_kneser_ney

    data, dataset, tok, samples = oracle_setup(tmp_path, make_data_dir)
    oracle = OracleCTC(tok, {samples[u]: data.text[u] for u in data.utt_ids})
    arpa = tmp_path / "char.arpa"
    backwards = [tok.tokens(tok.normalize(text)[::-1]) for text in data.text.values()]
    train_kneser_ney(backwards * 5, order=3).write_arpa(arpa)
    plain = evaluate_ctc(oracle, dataset, tok, decoder="beam", beam=4)
    off = evaluate_ctc(oracle, dataset, tok, decoder="beam", beam=4, kenlm=str(arpa),
                       lm_weight=0.0)
    assert plain == off and plain["cer"] == 0.0
    fused = evaluate_ctc(oracle, dataset, tok, decoder="beam", beam=4, kenlm=str(arpa),
                         lm_weight=50.0)
    assert fused["cer"] > 0.2


def test_decoding_keys_that_do_not_go_together_are_user_errors(tmp_path):
    from sprune.tasks.ctc_decode import check_decoding_options

    arpa = tmp_path / "char.arpa"
    arpa.write_text("not read here")
    with pytest.raises(UserError, match="set ctc.decoder: beam or drop ctc.kenlm"):
        check_decoding_options("greedy", str(arpa), 0.5)
    with pytest.raises(UserError, match="missing.arpa does not exist"):
        check_decoding_options("beam", str(tmp_path / "missing.arpa"), 0.5)
    with pytest.raises(UserError, match="no ctc.kenlm is given"):
        check_decoding_options("beam", None, 0.5)
    with pytest.raises(UserError, match="ctc.beam_tokens must be at least 1"):
        check_decoding_options("beam", None, 0.0, beam_tokens=0)
    with pytest.raises(UserError, match="ctc.beam_tokens must be at least 1"):
        check_decoding_options("beam", None, 0.0, beam_tokens=0)
    with pytest.raises(UserError, match="unknown CTC decoder 'viterbi'"):
        check_decoding_options("viterbi", None, 0.0)
    check_decoding_options("beam", str(arpa), 0.5)


def test_decode_dataset_batches_by_length_but_keeps_dataset_order(tmp_path, make_data_dir):
    # Lengths out of order in the data dir: length-sorted batches are not in dataset order.
    path = make_data_dir(tmp_path, n_utts=5, seconds=(0.5, 0.45, 0.25, 0.4, 0.3))
    data = DataDir.load(path)
    dataset = AudioDataset(data, preload=True)
    tok = build_tokenizer("char", data.text.values())
    samples = {utt: len(dataset[i]["wav"]) for i, utt in enumerate(dataset.utts)}
    assert sum(dataset.length_sorted_batches(2), []) != list(range(5))
    oracle = OracleCTC(tok, {samples[u]: data.text[u] for u in data.utt_ids})
    decoded = decode_dataset(oracle, dataset, tok, batch_size=2)
    assert [d.utt for d in decoded] == dataset.utts
    assert [d.hyp for d in decoded] == [tok.normalize(data.text[u]) for u in dataset.utts]


def test_evaluate_ctc_with_phones_reports_per(tmp_path, make_data_dir):
    path = make_data_dir(tmp_path, n_utts=2, seconds=(0.5, 0.6))
    data = DataDir.load(path)
    ipa = {u: t for u, t in zip(data.utt_ids, ["wˈʌn tˈuː θɹˈiː", "tˈuː θɹˈiː fˈɔːɹ"])}
    DataDir(wav_scp=data.wav_scp, utt2spk=data.utt2spk, utt2lang=data.utt2lang,
            text=ipa).save(tmp_path / "phones")
    dataset = AudioDataset(DataDir.load(tmp_path / "phones"), preload=True)
    tok = build_tokenizer("phone", ipa.values())
    samples = [len(dataset[i]["wav"]) for i in range(2)]
    # first utterance: θ -> t (one substitution); second: perfect
    hyps = {samples[0]: "wʌn tuː tɹiː", samples[1]: ipa[dataset.utts[1]]}
    scores = evaluate_ctc(OracleCTC(tok, hyps), dataset, tok)
    n_phones = len(tok.phones(ipa[dataset.utts[0]])) + len(tok.phones(ipa[dataset.utts[1]]))
    assert scores["per"] == pytest.approx(1 / n_phones) and scores["wer"] == pytest.approx(1 / 6)
    assert "cer" not in scores and set(scores) == {"per", "per/en-US", "wer", "wer/en-US"}


def test_empty_decoding_set_is_a_user_error(tmp_path, make_data_dir):
    data, dataset, tok, samples = oracle_setup(tmp_path, make_data_dir)
    empty = AudioDataset(data.subset([]))
    with pytest.raises(UserError, match="empty decoding set"):
        evaluate_ctc(OracleCTC(tok, {}), empty, tok)
    with pytest.raises(UserError, match="unknown CTC decoder 'best'"):
        evaluate_ctc(OracleCTC(tok, {}), dataset, tok, decoder="best")


def test_training_through_the_trainer(tmp_path, make_data_dir):
    path = make_data_dir(tmp_path, n_utts=4, seconds=(0.3, 0.4))
    data = DataDir.load(path)
    dataset = AudioDataset(data, preload=True)
    tok = build_tokenizer("char", data.text.values())
    model = CTCModel(FakeUpstream(), embed_dim=8, vocab_size=tok.vocab_size)
    config = TrainConfig(max_steps=4, batch_size=2, lr=1e-2, eval_every=4, save_every=4,
                         metric="wer", metric_mode="min", device="cpu")
    trainer = Trainer(model, dataset, CTCCollate(tok, source=str(path / "text")), config,
                      tmp_path / "exp", evaluate=lambda m: evaluate_ctc(m, dataset, tok),
                      show_progress=False)
    trainer.fit()
    events = [json.loads(line) for line in (tmp_path / "exp" / "log.jsonl").read_text().splitlines()]
    evals = [e for e in events if e["event"] == "eval"]
    assert evals and {"wer", "cer", "wer/en-US"} <= set(evals[-1])
    assert 0.0 <= evals[-1]["cer"]


def test_head_learning_rate_scale_reaches_the_optimizer(tmp_path, make_data_dir):
    path = make_data_dir(tmp_path, n_utts=4, seconds=(0.3, 0.4))
    data = DataDir.load(path)
    tok = build_tokenizer("char", data.text.values())
    model = CTCModel(FakeUpstream(), embed_dim=8, vocab_size=tok.vocab_size, head_lr_scale=10.0)
    config = TrainConfig(max_steps=2, batch_size=2, lr=1e-3, warmup_ratio=0.0, eval_every=2,
                         save_every=2, device="cpu")
    trainer = Trainer(model, AudioDataset(data, preload=True), CTCCollate(tok), config,
                      tmp_path / "exp", show_progress=False)
    head = {id(p) for p in model.head.parameters()}
    scales = {id(p): group.get("lr_scale", 1.0) for group in trainer.optimizer.param_groups
              for p in group["params"]}
    assert {scales[i] for i in head} == {10.0}
    assert {s for i, s in scales.items() if i not in head} == {1.0}
    assert len(scales) == sum(1 for p in model.parameters() if p.requires_grad)
    trainer.fit()
    lrs = {group.get("lr_scale", 1.0): group["lr"] for group in trainer.optimizer.param_groups}
    assert lrs[10.0] == pytest.approx(10 * lrs[1.0])
    with pytest.raises(UserError, match="head_lr_scale"):
        CTCModel(FakeUpstream(), embed_dim=8, vocab_size=tok.vocab_size, head_lr_scale=0.0)


def test_time_masking_zeroes_spans_of_the_encoder_input_while_training_only():
    """ctc.time_mask_prob: spans of the projected features are zero in training; an eval
    forward is the unmasked model's; a probability outside [0, 1) is a config error."""
    from sprune.upstream import UpstreamModel, tiny_config

    torch.manual_seed(0)
    upstream = UpstreamModel(tiny_config("wav2vec2"))
    plain = UpstreamModel(tiny_config("wav2vec2"))
    plain.load_state_dict(upstream.state_dict())
    model = CTCModel(upstream, embed_dim=upstream.config.embed_dim, vocab_size=5,
                     time_mask_prob=0.2, time_mask_span=3)
    seen = []
    upstream.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    wavs = torch.randn(2, 16000)
    lengths = torch.tensor([16000, 12000])
    model.train()
    upstream(wavs, lengths)
    zero_rows = (seen[-1] == 0).all(-1)                       # [B, T] masked frames
    assert zero_rows.any(1).all() and not zero_rows.all()
    valid = upstream.frame_lengths(lengths)
    assert not zero_rows[1, int(valid[1]):].any()             # padding is never masked
    model.eval()
    with torch.no_grad():
        masked_off = upstream(wavs, lengths).hidden_states[-1]
        reference = plain.eval()(wavs, lengths).hidden_states[-1]
    assert not (seen[-1] == 0).all(-1).any()
    assert torch.equal(masked_off, reference)
    with pytest.raises(UserError, match="time_mask_prob"):
        CTCModel(UpstreamModel(tiny_config("wav2vec2")), 8, 5, time_mask_prob=1.0)
