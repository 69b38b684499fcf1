"""Decode data dirs with a finished transducer or CTC run, with or without an LM.

Transducer runs (below): sprune's batched search with shallow fusion of a sprune LM. CTC
runs: greedy, or torchaudio's flashlight CTC beam search with a lexicon and a KenLM n-gram or
a sprune LM (`sprune decode RUN --help` options --lexicon, --kenlm, --word-score; see
sprune.bin.decode_ctc).

  sprune decode exp/asr/dense --test data/test --beam 4
  sprune decode exp/asr/dense --dev data/dev --test data/test --lm exp/lm/dense/final \\
      --lm-weight 0.1,0.2,0.3 --length-bonus 0,1,2 --lodr data/lodr.2gram --lodr-weight 0,0.1 \\
      --name lm_dense
  sprune decode exp/asr/dense --test data/test --decoder espnet --beam 4 \\
      --lm exp/lm/dense/final --lm-weight 0.3   # ESPnet's BeamSearchTransducer, as the reference

With several values of --lm-weight / --lodr-weight / --length-bonus (comma-separated) every
combination is decoded on --dev (the encoder runs once; its outputs are kept while they fit
in 2 GiB) and the lowest dev WER picks the values used on the test sets (ties: the first in
the order given). Writes <run>/decode_<name>/: result.json (decoder, beam, LM,
chosen weights, the dev grid, test WER / CER, real-time factor), hyp_<set>.txt (utterance id
and hypothesis per line). The LM must use the run's BPE model (`transducer.bpe`):
`sprune lm train --bpe <the same bpe.model>`; the LODR n-gram comes from `sprune lm ngram`.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

from sprune.decode import SEARCH_BATCH
from sprune.errors import UserError
from sprune.io import atomic_write_text

HELP = "decode with a transducer or CTC run, fusing a (pruned) LM or an n-gram"


def weight_list(text: str) -> list[float]:
    """'0.1,0.2' -> [0.1, 0.2]; anything that is not a list of numbers is an argparse error."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers "
                                         "(e.g. 0.1,0.2,0.3)") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"'{text}': give finite numbers (e.g. 0.3)")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a finished transducer run (experiment.json, final/)")
    parser.add_argument("--test", nargs="+", required=True, metavar="DIR",
                        help="data dirs to decode and score with the chosen weights")
    parser.add_argument("--dev", metavar="DIR",
                        help="data dir on which the weight grid is tuned (needed when a weight "
                             "option lists several values)")
    parser.add_argument("--decoder", choices=("sprune", "espnet", "flashlight", "greedy"),
                        help="transducer runs: sprune (batched modified beam search with "
                             "cached LM fusion, the default) or espnet (ESPnet's "
                             "BeamSearchTransducer); CTC runs: flashlight (torchaudio's CTC "
                             "beam search, the default) or greedy")
    parser.add_argument("--beam", type=int, help="beam size (default: 4 for transducer runs, "
                        "1 = greedy; 16 for CTC runs)")
    parser.add_argument("--lm", metavar="LM_DIR", help="a sprune LM folder to fuse")
    parser.add_argument("--lexicon", metavar="FILE",
                        help="CTC: a lexicon (`word unit unit ...` per line, `sprune lexicon`) "
                             "restricting the search to its words; needed by --kenlm / --lm")
    parser.add_argument("--kenlm", metavar="FILE",
                        help="CTC: an n-gram, ARPA or KenLM binary: over words with --lexicon, "
                        "over the run's units without (`sprune lm arpa [--units RUN]`)")
    parser.add_argument("--word-score", type=weight_list, default=[0.0], metavar="S[,S...]",
                        help="CTC with --lexicon: score added per word, tuned with the LM "
                             "weight (default 0)")
    parser.add_argument("--beam-tokens", type=int, metavar="N",
                        help="CTC: try only the N most likely units per frame (default: all)")
    parser.add_argument("--beam-threshold", type=float, default=50.0,
                        help="CTC: hypotheses this far below the best are dropped (default 50)")
    parser.add_argument("--tune-on", choices=("wer", "cer"), default="wer",
                        help="CTC: the dev error rate the weight grid minimises (default wer; "
                        "cer suits a unit n-gram)")
    parser.add_argument("--report", metavar="FILE",
                        help="CTC: write or replace the run's `## CTC decoding` table (all "
                             "its decode_*/result.json) in this Markdown file")
    parser.add_argument("--report-note", metavar="TEXT",
                        help="CTC: a line printed above that table")
    parser.add_argument("--lm-weight", type=weight_list, default=[0.0], metavar="W[,W...]",
                        help="LM weight(s) (default 0)")
    parser.add_argument("--lodr", metavar="FILE",
                        help="token n-gram of the training transcripts (`sprune lm ngram`) "
                             "subtracted as LODR (sprune decoder only)")
    parser.add_argument("--lodr-weight", type=weight_list, default=[0.0], metavar="W[,W...]",
                        help="LODR weight(s) (default 0)")
    parser.add_argument("--blank-penalty", type=float, default=0.0,
                        help="subtracted from the blank logit (sprune decoder; default 0)")
    parser.add_argument("--length-bonus", type=weight_list, default=[0.0], metavar="B[,B...]",
                        help="added per emitted token, tuned with the weights (sprune decoder; "
                             "default 0; shallow fusion usually wants one: the LM's "
                             "log-probs otherwise favour deletions)")
    parser.add_argument("--name", help="result folder decode_<name> (default: from the options)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="utterances encoded together (default 8)")
    parser.add_argument("--search-batch", type=int, default=SEARCH_BATCH,
                        help="utterances the sprune search decodes together (default "
                             f"{SEARCH_BATCH}; larger is faster per utterance)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")


def _check(args: argparse.Namespace) -> None:
    if args.decoder in ("flashlight", "greedy"):
        raise UserError(f"--decoder {args.decoder} decodes CTC runs; a transducer run takes "
                        "--decoder sprune or espnet")
    if args.lexicon or args.kenlm or any(args.word_score) or args.report \
            or args.tune_on != "wer" or args.beam_tokens is not None:
        raise UserError("--lexicon, --kenlm, --word-score, --tune-on, --beam-tokens and --report "
                        "apply to CTC runs")
    if args.beam < 1:
        raise UserError(f"--beam must be at least 1, got {args.beam}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.search_batch < 1:
        raise UserError(f"--search-batch must be at least 1, got {args.search_batch}")
    if args.lm is None and any(w != 0 for w in args.lm_weight):
        raise UserError("--lm-weight is set but no --lm is given; add --lm LM_DIR")
    if args.lodr is None and any(w != 0 for w in args.lodr_weight):
        raise UserError("--lodr-weight is set but no --lodr is given; add --lodr FILE "
                        "(`sprune lm ngram`)")
    if args.decoder == "espnet":
        if args.lodr is not None or args.blank_penalty or any(args.length_bonus):
            raise UserError("--lodr, --blank-penalty and --length-bonus work with --decoder "
                            "sprune only (ESPnet's search has no such terms)")
    if len(args.lm_weight) * len(args.lodr_weight) * len(args.length_bonus) > 1 \
            and args.dev is None:
        raise UserError("several weights are given but no --dev to choose among them; add "
                        "--dev DIR or give one value each")


def default_name(args: argparse.Namespace) -> str:
    name = f"{args.decoder}_beam{args.beam}"
    if args.lm is not None:
        lm = Path(args.lm).resolve()
        name += f"_lm-{lm.parent.name if lm.name in ('final', 'shrunk') else lm.name}"
    return name + ("_lodr" if args.lodr is not None else "")


def load_fusion_models(run_dir: Path, experiment: Any, lm_dir: str | None, lodr: str | None,
                       device: str):
    """The LM and LODR n-gram to fuse, checked against the run's BPE model."""
    lm = ngram = None
    bpe = run_dir / experiment.BPE_FILE
    if lm_dir is not None:
        from sprune.lm.checkpoint import load_lm, vocab_path

        lm, _ = load_lm(lm_dir, device)
        lm_bpe = vocab_path(lm_dir)
        same = (lm_bpe.read_bytes() == bpe.read_bytes() if lm_bpe is not None
                else lm.config.vocab_size == experiment.vocab.vocab_size)
        if not same or lm.config.vocab_size != experiment.vocab.vocab_size:
            raise UserError(f"the LM in {lm_dir} was trained with another BPE model than the "
                            f"transducer in {run_dir} ({bpe}); train the LM with --bpe {bpe}, "
                            "or the transducer with transducer.bpe set to the LM's bpe.model")
    if lodr is not None:
        from sprune.lm.ngram import TokenNGram

        ngram = TokenNGram.load(lodr).to(device)
        ngram.check_vocab(experiment.vocab, lodr)
    return lm, ngram


def run(args: argparse.Namespace) -> int:
    from sprune.decode.espnet_reference import EspnetTransducerSearch
    from sprune.decode.transducer_search import FusionWeights, TransducerSearch
    from sprune.experiment import load_experiment
    from sprune.prune.methods.base import load_model_state
    from sprune.tasks.ctc import error_rates
    from sprune.tasks.transducer import EncodedSet, search_encoded
    from sprune.training import resolve_device

    run_dir = Path(args.run_dir)
    if args.beam is not None and args.beam < 1:
        raise UserError(f"--beam must be at least 1, got {args.beam}")
    if not (run_dir / "final").is_dir():
        raise UserError(f"{run_dir}/final is missing; the run has not finished (run `sprune "
                        "prune` for it first)")
    experiment = load_experiment(run_dir)
    if experiment.task == "ctc":
        from sprune.bin.decode_ctc import run_ctc

        return run_ctc(args, run_dir, experiment)
    if experiment.task != "transducer":
        raise UserError(f"{run_dir} is a '{experiment.task}' run; sprune decode decodes "
                        "transducer and CTC runs (use `sprune evaluate` for the others)")
    args.decoder, args.beam = args.decoder or "sprune", args.beam or 4
    _check(args)
    device = str(resolve_device(args.device))
    lm, ngram = load_fusion_models(run_dir, experiment, args.lm, args.lodr, device)
    model = experiment.build_model()
    load_model_state(model, run_dir / "final")
    model.to(device).eval()

    def decode(encoded: EncodedSet, lm_weight: float, lodr_weight: float, bonus: float):
        if args.decoder == "espnet":
            search = EspnetTransducerSearch(model.decoder, model.joint, args.beam, lm, lm_weight)
        else:
            weights = FusionWeights(lm_weight, lodr_weight, args.blank_penalty, bonus)
            search = TransducerSearch(model.decoder, model.joint, args.beam, lm, ngram, weights)
        cached = encoded.cache is not None
        start = time.perf_counter()
        decoded = search_encoded(encoded, experiment.vocab, search, args.search_batch)
        searching = time.perf_counter() - start - (0.0 if cached else encoded.seconds)
        # the real-time factor of encoder + search, whether this pass ran the encoder or an
        # earlier one did
        return decoded, {**error_rates(decoded, experiment.vocab.tokenizer),
                         "rtf": (searching + encoded.seconds) / max(encoded.audio_seconds, 1e-9),
                         "utterances": len(decoded),
                         "ref_words": sum(len(d.ref.split()) for d in decoded)}

    def encoded(data_dir: str) -> EncodedSet:
        return EncodedSet(model, experiment.dataset(data_dir), args.batch_size, device)

    grid = list(itertools.product(args.lm_weight, args.lodr_weight, args.length_bonus))
    tuning = []
    if args.dev is not None:
        dev = encoded(args.dev)
        for lm_weight, lodr_weight, bonus in grid:
            _, metrics = decode(dev, lm_weight, lodr_weight, bonus)
            tuning.append({"lm_weight": lm_weight, "lodr_weight": lodr_weight,
                           "length_bonus": bonus, **metrics})
            print(f"dev {Path(args.dev).name}: lm_weight {lm_weight:g} lodr_weight "
                  f"{lodr_weight:g} length_bonus {bonus:g}: wer {metrics['wer']:.4f}", flush=True)
        chosen = min(tuning, key=lambda row: row["wer"])   # min keeps the first of ties
        lm_weight, lodr_weight, bonus = (chosen["lm_weight"], chosen["lodr_weight"],
                                         chosen["length_bonus"])
    else:
        (lm_weight, lodr_weight, bonus), = grid
    out = run_dir / f"decode_{args.name or default_name(args)}"
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for data_dir in args.test:
        decoded, metrics = decode(encoded(data_dir), lm_weight, lodr_weight, bonus)
        name = Path(data_dir).name
        results[name] = metrics
        atomic_write_text(out / f"hyp_{name}.txt", "".join(f"{d.utt} {d.hyp}\n" for d in decoded))
        print(f"{run_dir} on {data_dir}: wer {metrics['wer']:.4f}, cer {metrics['cer']:.4f}, "
              f"rtf {metrics['rtf']:.3f}", flush=True)
    document = {"decoder": args.decoder, "beam": args.beam, "lm": args.lm, "lodr": args.lodr,
                "lm_weight": lm_weight, "lodr_weight": lodr_weight,
                "blank_penalty": args.blank_penalty, "length_bonus": bonus,
                "dev": args.dev, "tuning": tuning, "test": results}
    atomic_write_text(out / "result.json", json.dumps(document, indent=1) + "\n")
    return 0
