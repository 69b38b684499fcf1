"""Benchmark: sprune's batched transducer search with cached LM fusion against ESPnet's
`BeamSearchTransducer` on the same model, LM and utterances (issue 14).

The encoder runs once per utterance (batches of --batch-size, timed on its own); then every
search decodes the same encoder outputs, timed by wall clock over all utterances:

    espnet  ESPnet's `default` beam search (one utterance, one hypothesis at a time), the
            sprune LM as its `lm` through the ESPnet scorer interface
    sprune  `sprune.decode.TransducerSearch`: utterances and hypotheses batched, the LM
            advanced one cached step per emitted token (`sprune.decode.lm_tree`)

at each --beams, with and without the LM (--lm-weight; sprune adds --length-bonus per token
with the LM, as `sprune decode` tunes it). Printed per row: search seconds, the search's
real-time factor (search seconds / audio seconds), the decode's (encoder + search, what
`sprune decode` reports), WER when the utterances have transcripts, and the ratios measured
side by side in this run: sprune's speed-up over ESPnet at the same beam and LM, and the cost
LM fusion adds to sprune's search without it and to its whole decode. Targets (reported, not
asserted): speed-up >= 5x at beams 4 and 8 with WER <= ESPnet's; fusion adds <= 50 % to the
no-LM decode.

    tools/venv/bin/python bench/fusion_decode.py --run egs/kjv/asr1/exp/<tag>/dense \\
        --lm ../lm1/exp/mini/dense --data egs/kjv/asr1/data/test [--utts 100] [--beams 4 8] \\
        [--lm-weight 0.3] [--threads 1] [--json FILE]
    tools/venv/bin/python bench/fusion_decode.py --small     # random tiny models (the test's)

Trained models matter here: ESPnet's search keeps expanding hypotheses while no kept one beats
the best expanded one, which on an untrained, flat model takes very long; --small only shows
the table's shape.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from sprune.io import atomic_write_text
from sprune.malloc import keep_freed_memory


def build_small(folder: Path) -> tuple[Path, Path, Path]:
    """A tiny random transducer run, a random LM on its BPE model and 6 utterances."""
    from sprune.cli import main
    from sprune.lm.checkpoint import save_lm
    from sprune.lm.config import LMConfig
    from sprune.lm.model import TransformerLM
    from sprune.lm.vocab import LMVocab
    from sprune.upstream import UpstreamModel, save_upstream, tiny_config

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
    from conftest import build_data_dir

    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("wav2vec2")), folder / "upstream")
    for name in ("train", "test"):
        build_data_dir(folder, n_utts=6, langs=("en-US",), name=name, seconds=(0.6, 0.8),
                       with_intent=False)
    lines = [line.split(maxsplit=1)[1] for line in (folder / "train/text").read_text().splitlines()]
    LMVocab.train(lines * 3, 40).save(folder / "bpe.model")
    (folder / "ft.yaml").write_text(
        f"task: transducer\nupstream: {folder / 'upstream'}\ntransducer:\n  bpe: "
        f"{folder / 'bpe.model'}\n  decoder_dim: 16\n  joint_dim: 16\ntrain:\n  max_steps: 1\n"
        "  batch_size: 2\n  device: cpu\n  eval_every: 100\n  save_every: 100\n")
    code = main(["prune", "--config", str(folder / "ft.yaml"), "--method", "dense", "--train",
                 str(folder / "train"), "--dev", str(folder / "test"), "--out",
                 str(folder / "run")])
    assert code == 0
    config = LMConfig(vocab_size=40, embed_dim=8, d_model=16, heads=2, ffn_dim=16, layers=2)
    save_lm(folder / "lm", TransformerLM(config), vocab=folder / "bpe.model")
    with torch.no_grad():   # a blank habit, so that ESPnet's search ends in reasonable time
        from safetensors.torch import load_file, save_file
        weights = load_file(str(folder / "run/final/tensors.safetensors"))
        key = next(k for k in weights if k.endswith("joint.lin_out.bias"))
        weights[key][0] += 4.0
        save_file(weights, str(folder / "run/final/tensors.safetensors"))
    return folder / "run", folder / "lm", folder / "test"


def run_search(search, encoded, vocab, search_batch: int, repeats: int = 1
               ) -> tuple[float, list[str], list[str]]:
    """Seconds to search every batch of `encoded` (an `EncodedSet` whose outputs are kept),
    the fastest of `repeats` passes, references and hypotheses."""
    from sprune.tasks.transducer import search_encoded

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decoded = search_encoded(encoded, vocab, search, search_batch)
        times.append(time.perf_counter() - start)
    return min(times), [d.ref for d in decoded], [d.hyp for d in decoded]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a finished transducer run folder")
    parser.add_argument("--lm", type=Path, help="a sprune LM folder on the run's BPE model")
    parser.add_argument("--data", type=Path, help="data dir with the utterances to decode")
    parser.add_argument("--utts", type=int, default=100, help="first N utterances (default 100)")
    parser.add_argument("--beams", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--lm-weight", type=float, default=0.3)
    parser.add_argument("--length-bonus", type=float, default=0.0,
                        help="sprune's per-token bonus with the LM (ESPnet's search has none; "
                             "it ranks its final hypotheses by score / length instead)")
    parser.add_argument("--batch-size", type=int, default=8, help="encoder batch (default 8)")
    parser.add_argument("--search-batch", type=int, default=64,
                        help="utterances sprune's search decodes together (default 64, as "
                             "`sprune decode`; ESPnet's search takes one at a time)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each search this many times and keep the fastest "
                             "(default 1)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--small", action="store_true", help="random tiny models (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(args.threads)

    from sprune import metrics
    from sprune.data.dataset import AudioDataset
    from sprune.data.datadir import DataDir
    from sprune.decode.espnet_reference import EspnetTransducerSearch
    from sprune.decode.transducer_search import FusionWeights, TransducerSearch
    from sprune.experiment import load_experiment
    from sprune.lm.checkpoint import load_lm
    from sprune.prune.methods.base import load_model_state
    from sprune.tasks.transducer import EncodedSet

    scratch = tempfile.TemporaryDirectory() if args.small else None
    if args.small:
        args.run, args.lm, args.data = build_small(Path(scratch.name))
        args.beams = [2]
    elif not (args.run and args.lm and args.data):
        parser.error("give --run, --lm and --data (or --small)")
    experiment = load_experiment(args.run)
    model = experiment.build_model()
    load_model_state(model, args.run / "final")
    model.eval()
    lm, _ = load_lm(args.lm)
    data = DataDir.load(args.data)
    keep = sorted(data.wav_scp)[:args.utts]
    dataset = AudioDataset(data.subset(keep), preload=True)
    encoded = EncodedSet(model, dataset, args.batch_size)
    for _ in encoded:   # the encoder runs once, here; every search reads its kept outputs
        pass
    if encoded.cache is None:
        parser.error(f"the encoder outputs of {len(dataset)} utterances do not fit in memory; "
                     "lower --utts")
    encoder_seconds, audio = encoded.seconds, encoded.audio_seconds

    rows: list[dict[str, Any]] = []
    for beam in args.beams:
        for with_lm in (False, True):
            weight = args.lm_weight if with_lm else 0.0
            searches = {
                "espnet": EspnetTransducerSearch(model.decoder, model.joint, beam, lm, weight),
                "sprune": TransducerSearch(model.decoder, model.joint, beam, lm, weights=FusionWeights(
                    lm_weight=weight, length_bonus=args.length_bonus if with_lm else 0.0)),
            }
            for name, search in searches.items():
                seconds, refs, hyps = run_search(search, encoded, experiment.vocab,
                                                 args.search_batch, args.repeats)
                rows.append({"decoder": name, "beam": beam, "lm_weight": weight,
                             "seconds": seconds, "rtf": seconds / audio,
                             "decode_rtf": (seconds + encoder_seconds) / audio,
                             "wer": metrics.wer(refs, hyps)})
    by = {(r["decoder"], r["beam"], r["lm_weight"]): r for r in rows}
    for r in rows:
        espnet = by[("espnet", r["beam"], r["lm_weight"])]
        plain = by[(r["decoder"], r["beam"], 0.0)]
        r["speedup_vs_espnet"] = espnet["seconds"] / r["seconds"]
        r["fusion_overhead"] = r["seconds"] / plain["seconds"] - 1 if r["lm_weight"] else 0.0
        r["decode_fusion_overhead"] = (r["decode_rtf"] / plain["decode_rtf"] - 1
                                       if r["lm_weight"] else 0.0)

    print(f"{platform.processor() or platform.machine()}, {args.threads} thread(s), "
          f"{len(dataset)} utterances, {audio:.1f} s of audio; encoder {encoder_seconds:.2f} s "
          f"(RTF {encoder_seconds / audio:.4f}); LM {args.lm}, {lm.num_parameters():,} params; "
          f"sprune's length bonus with the LM {args.length_bonus:g}; sprune searches "
          f"{args.search_batch} utterances at once; fastest of {args.repeats} pass(es)")
    print("| decoder | beam | LM weight | search s | search RTF | decode RTF | WER % | "
          "speed-up vs ESPnet | LM fusion adds to the search | to the decode |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fusion = (f"{100 * r['fusion_overhead']:+.0f} % | {100 * r['decode_fusion_overhead']:+.0f} %"
                  if r["lm_weight"] else " | ")
        print(f"| {r['decoder']} | {r['beam']} | {r['lm_weight']:g} | {r['seconds']:.2f} | "
              f"{r['rtf']:.4f} | {r['decode_rtf']:.4f} | {100 * r['wer']:.1f} | "
              f"{r['speedup_vs_espnet']:.1f}x | {fusion} |")
    result = {"rows": rows, "utterances": len(dataset), "audio_seconds": audio,
              "length_bonus": args.length_bonus, "search_batch": args.search_batch,
              "repeats": args.repeats,
              "encoder_seconds": encoder_seconds, "threads": args.threads,
              "run": str(args.run), "lm": str(args.lm), "data": str(args.data),
              "pid": os.getpid()}
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    if scratch is not None:
        scratch.cleanup()
    return result


if __name__ == "__main__":
    main()
