"""`sprune decode` for CTC runs: greedy, or torchaudio's flashlight CTC beam search,
lexicon-free (optionally with a KenLM n-gram over the run's units, e.g. characters) or
lexicon-constrained, with a KenLM word n-gram or a sprune Transformer LM fused
(`sprune.decode.ctc_flashlight`).

  sprune decode exp/asr/dense --test data/test --decoder greedy
  sprune decode exp/asr/dense --test data/test --beam 16                     # no lexicon, no LM
  sprune decode exp/asr/dense --dev data/dev --test data/test --beam 16 --kenlm lm/char6.arpa \
      --lm-weight 0.2,0.4,0.8                                      # lexicon-free, unit n-gram
  sprune decode exp/asr/dense --dev data/dev --test data/test --beam 16 --lexicon lm/lexicon.txt \\
      --kenlm lm/3gram.arpa --lm-weight 0.5,1,2 --word-score -1,0,1 --name beam16_3gram
  sprune decode exp/asr/dense --dev data/dev --test data/test --beam 16 --lexicon lm/lexicon.txt \\
      --lm exp/lm/dense/final --lm-weight 0.5,1,2 --word-score -1,0,1 --report exp/RESULTS.md

The model runs once per data dir; every (lm-weight, word-score) pair is decoded on --dev and
the lowest dev WER picks the pair used on the test sets (ties: the first in the order
given). Writes <run>/decode_<name>/result.json (options, the dev grid, test WER / CER,
real-time factor of the search) and hyp_<set>.txt; --report FILE writes or replaces the
run's `## CTC decoding` table (every decode_*/result.json of the run) in FILE.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

from sprune.errors import UserError
from sprune.io import atomic_write_text

CTC_DECODERS = ("flashlight", "greedy")
DEFAULT_BEAM = 16
SAMPLE_RATE = 16000


def check_ctc_args(args: argparse.Namespace) -> None:
    """Options that do not apply to CTC runs, or do not go together, are one-line errors."""
    if args.decoder not in (None, *CTC_DECODERS):
        raise UserError(f"--decoder {args.decoder} decodes transducer runs; a CTC run takes "
                        f"--decoder {' or '.join(CTC_DECODERS)}")
    if args.lodr is not None or args.blank_penalty or any(args.length_bonus):
        raise UserError("--lodr, --blank-penalty and --length-bonus apply to transducer runs; "
                        "a CTC run takes --lexicon, --kenlm / --lm, --lm-weight, --word-score")
    if args.decoder == "greedy" and (args.lexicon or args.kenlm or args.lm):
        raise UserError("--decoder greedy takes no --lexicon / --kenlm / --lm; leave "
                        "--decoder out for the beam search")
    if args.kenlm is None and args.lm is None and any(w != 0 for w in args.lm_weight):
        raise UserError("--lm-weight is set but no LM is given; add --kenlm FILE or --lm LM_DIR")
    if len(args.lm_weight) * len(args.word_score) > 1 and args.dev is None:
        raise UserError("several weights are given but no --dev to choose among them; add "
                        "--dev DIR or give one value each")


def default_name(args: argparse.Namespace) -> str:
    """decode_<name>: greedy, or beam<N>[_lex][_kenlm-<file stem>|_lm-<LM folder>]."""
    if args.decoder == "greedy":
        return "greedy"
    name = f"beam{args.beam}" + ("_lex" if args.lexicon else "")
    if args.kenlm:
        name += f"_kenlm-{Path(args.kenlm).stem}"
    if args.lm:
        lm = Path(args.lm).resolve()
        name += f"_lm-{lm.parent.name if lm.name in ('final', 'shrunk') else lm.name}"
    return name


def build_searcher(args: argparse.Namespace, tokenizer: Any, device: str):
    """A function (lm_weight, word_score) -> decoder of [B, T, V] log-probs to texts."""
    from sprune.tasks.ctc_decode import CTCTaskDecoder

    if args.decoder == "greedy":
        greedy = CTCTaskDecoder(tokenizer, "greedy")
        return lambda lm_weight, word_score: greedy
    from sprune.decode.ctc_flashlight import FlashlightCTCDecoder, SearchOptions
    from sprune.decode.lexicon import read_lexicon

    lexicon = read_lexicon(args.lexicon, tokenizer) if args.lexicon else None
    neural = None
    if args.lm is not None:
        from sprune.decode.ctc_neural_lm import SpruneWordLM
        from sprune.lm.checkpoint import load_lm, vocab_path
        from sprune.lm.vocab import LMVocab, check_vocab_matches

        model, _ = load_lm(args.lm, device)
        bpe = vocab_path(args.lm)
        if bpe is None:
            raise UserError(f"LM {args.lm} has no bpe.model; write it with `sprune lm train`")
        vocab = LMVocab.load(bpe)
        check_vocab_matches(vocab, model.config.vocab_size, bpe)
        neural = SpruneWordLM(model, vocab)

    def make(lm_weight: float, word_score: float):
        options = SearchOptions(beam=args.beam, beam_tokens=args.beam_tokens,
                                beam_threshold=args.beam_threshold,
                                lm_weight=lm_weight, word_score=word_score)
        return FlashlightCTCDecoder(tokenizer, options, lexicon, args.kenlm, neural).texts
    return make


class EncodedCTC:
    """A data dir run through the CTC model once: per batch (dataset indices, utterance
    ids, languages, normalised references, log-probs [B, T, V], frames [B]) and the audio
    seconds."""

    def __init__(self, model: Any, dataset: Any, tokenizer: Any, batch_size: int,
                 device: str) -> None:
        from sprune.tasks.ctc import ctc_log_probs

        self.size = len(dataset)
        self.batches = []
        self.audio_seconds = 0.0
        for indices, batch, log_probs, frames in ctc_log_probs(model, dataset, batch_size,
                                                                device):
            langs = batch.get("lang") or [None] * len(indices)
            refs = [tokenizer.normalize(t) for t in batch["text"]]
            self.batches.append((indices, batch["utt"], langs, refs, log_probs, frames))
            self.audio_seconds += float(batch["lengths"].sum()) / SAMPLE_RATE

    def decode(self, texts: Any) -> tuple[list[Any], float]:
        """Decode every batch with `texts` (log-probs, frames -> texts): the `Decoded`
        utterances in dataset order and the search seconds."""
        from sprune.tasks.ctc import Decoded

        out: dict[int, Decoded] = {}
        start = time.perf_counter()
        for indices, utts, langs, refs, log_probs, frames in self.batches:
            for i, utt, lang, ref, hyp in zip(indices, utts, langs, refs,
                                              texts(log_probs, frames)):
                out[i] = Decoded(utt, lang, ref, hyp)
        return [out[i] for i in sorted(out)], time.perf_counter() - start


def run_ctc(args: argparse.Namespace, run_dir: Path, experiment: Any) -> int:
    """Decode with a finished CTC run (the module docstring)."""
    from sprune.prune.methods.base import load_model_state
    from sprune.tasks.ctc import error_rates
    from sprune.training import resolve_device

    check_ctc_args(args)
    args.beam = args.beam or DEFAULT_BEAM
    args.decoder = args.decoder or "flashlight"
    device = str(resolve_device(args.device))
    tokenizer = experiment.tokenizer
    searcher = build_searcher(args, tokenizer, device)   # checks lexicon / LM files first
    model = experiment.build_model()
    load_model_state(model, run_dir / "final")
    model.to(device).eval()

    def decode(encoded: EncodedCTC, lm_weight: float, word_score: float):
        decoded, seconds = encoded.decode(searcher(lm_weight, word_score))
        return decoded, {**error_rates(decoded, tokenizer),
                         "rtf": seconds / max(encoded.audio_seconds, 1e-9),
                         "utterances": len(decoded),
                         "ref_words": sum(len(d.ref.split()) for d in decoded)}

    def encoded(data_dir: str) -> EncodedCTC:
        return EncodedCTC(model, experiment.dataset(data_dir), tokenizer, args.batch_size, device)

    grid = list(itertools.product(args.lm_weight, args.word_score))
    tuning = []
    if args.dev is not None and len(grid) > 1:
        dev = encoded(args.dev)
        for lm_weight, word_score in grid:
            _, metrics = decode(dev, lm_weight, word_score)
            if args.tune_on not in metrics:
                raise UserError(f"--tune-on {args.tune_on}: {run_dir}'s units give no "
                                f"{args.tune_on} ({', '.join(sorted(metrics))}); use --tune-on wer")
            tuning.append({"lm_weight": lm_weight, "word_score": word_score, **metrics})
            print(f"dev {Path(args.dev).name}: lm_weight {lm_weight:g} word_score "
                  f"{word_score:g}: {args.tune_on} {metrics[args.tune_on]:.4f}", flush=True)
        chosen = min(tuning, key=lambda row: row[args.tune_on])   # min keeps the first of ties
        lm_weight, word_score = chosen["lm_weight"], chosen["word_score"]
    else:
        (lm_weight, word_score), = grid
        if args.dev is not None:
            _, metrics = decode(encoded(args.dev), lm_weight, word_score)
            tuning.append({"lm_weight": lm_weight, "word_score": word_score, **metrics})
    out = run_dir / f"decode_{args.name or default_name(args)}"
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for data_dir in args.test:
        decoded, metrics = decode(encoded(data_dir), lm_weight, word_score)
        name = Path(data_dir).name
        results[name] = metrics
        atomic_write_text(out / f"hyp_{name}.txt", "".join(f"{d.utt} {d.hyp}\n" for d in decoded))
        print(f"{run_dir} on {data_dir}: wer {metrics['wer']:.4f}, "
              + (f"cer {metrics['cer']:.4f}, " if "cer" in metrics else "")
              + f"rtf {metrics['rtf']:.4f}", flush=True)
    document = {"task": "ctc", "decoder": args.decoder, "beam": args.beam,
                "beam_tokens": args.beam_tokens, "beam_threshold": args.beam_threshold,
                "lexicon": args.lexicon,
                "kenlm": args.kenlm, "lm": args.lm, "lm_weight": lm_weight,
                "word_score": word_score, "dev": args.dev, "tune_on": args.tune_on,
                "tuning": tuning, "test": results}
    atomic_write_text(out / "result.json", json.dumps(document, indent=1) + "\n")
    if args.report is not None:
        from sprune.decode.ctc_report import write_report_section

        write_report_section(Path(args.report), run_dir, args.report_note or "")
    return 0
