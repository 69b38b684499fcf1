"""Collect an LM pruning experiment into RESULTS.md, results.csv and PNG plots.

  sprune lm results exp/mini
  sprune lm results exp/mini --out exp/mini/RESULTS.md --title "KJV: LM pruning" \\
      --note "Corpus: the King James Bible ..."

EXP_DIR holds one folder per run with the outcome.json of `sprune lm train` (dense, scratch
baselines) or `sprune lm prune`, and the eval_<text>.json that `sprune lm eval --text
<text>.txt` wrote into the LM it measured (shrunk/ or final/). RESULTS.md gets the table of
every run (method, criterion, schedule, target, parameters, FLOPs/token, ms/token, dev and
test perplexity) and paper 002's three questions answered from those numbers: incremental
vs one-shot, Taylor (any data-driven criterion) vs magnitude, pruned vs same-size from
scratch, each with the pairs it compares and the sign it finds. results.csv and
ppl_vs_{params,flops,latency}.png go beside RESULTS.md. See sprune.lm.report.

With --asr-run, the same LMs are ranked by the WER of a transducer with each of them fused:
RUN holds `sprune decode --name <prefix><LM run>` results (decode_lm_<run>/result.json) and
the decoding without an LM (decode_nolm/); RUN/RESULTS.md (or --out) gets the WER table, the
three questions by WER, results.csv and wer_vs_{params,flops}.png. See sprune.decode.report.

  sprune lm results ../lm1/exp/mini --asr-run exp/kjv/dense
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exp_dir", type=Path, metavar="EXP_DIR",
                        help="experiment folder: one sub-folder per run (outcome.json)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="RESULTS.md to write; results.csv and the PNGs go beside it "
                             "(default: EXP_DIR/RESULTS.md)")
    parser.add_argument("--text", default="test", metavar="NAME",
                        help="which eval_<NAME>.json holds the test perplexity (default: "
                             "%(default)s, from `sprune lm eval --text .../test.txt`)")
    parser.add_argument("--title", help="title of RESULTS.md (default: the folder name)")
    parser.add_argument("--note", default="",
                        help="a paragraph under the title (corpus, configs, ...)")
    parser.add_argument("--asr-run", type=Path, metavar="RUN",
                        help="a transducer run with `sprune decode` results for these LMs: "
                             "rank the LMs by its WER (RESULTS.md goes into RUN by default)")
    parser.add_argument("--decode-prefix", default="lm_", metavar="P",
                        help="with --asr-run: LM run R was decoded into decode_<P><R>/ "
                             "(default %(default)s); decode_nolm/ is the no-LM baseline")
    parser.add_argument("--quiet", action="store_true", help="do not print RESULTS.md")


def run(args: argparse.Namespace) -> int:
    if args.asr_run is not None:
        from sprune.decode.report import write_fusion_results

        path = write_fusion_results(args.asr_run, args.exp_dir, args.out, args.decode_prefix,
                                    title=args.title, note=args.note)
    else:
        from sprune.lm.report import write_lm_results

        path = write_lm_results(args.exp_dir, args.out, args.text, args.title, args.note)
    if not args.quiet:
        print(path.read_text(encoding="utf-8"), end="")
    print(f"wrote {path}, {path.parent / 'results.csv'} and the plots beside them")
    return 0
