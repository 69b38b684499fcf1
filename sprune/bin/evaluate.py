"""Evaluate a finished run folder (written by `sprune prune`) on a data dir.

  sprune evaluate exp/ic/parp_s0.70 --data data/test --name test
  sprune evaluate exp/asr/parp_s0.70 --data data/test --name test_beam --decoder beam --beam 8
  sprune evaluate exp/asr/parp_s0.70 --data data/test --decoder beam --kenlm lm/char6.arpa \\
      --lm-weight 0.8                                    # lexicon-free, character 6-gram

Writes <run>/eval_<name>.json with overall and per-language metrics: accuracy for intent
runs; wer, cer (char / bpe units) or per (phone units) for CTC runs, as fractions, with the
decoder of the run's config (`ctc.decoder`); wer and cer for transducer runs (sprune's search
at `transducer.beam` or --beam, no LM: `sprune decode` fuses LMs). A `pathways` run decodes
each language's utterances through that language's pathway (`<metric>/<lang>`; `<metric>` is
their mean over languages).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from sprune.errors import UserError
from sprune.io import atomic_write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="run folder with experiment.json and final/")
    parser.add_argument("--data", required=True, help="data dir to evaluate on")
    parser.add_argument("--name", help="name of the result (default: the data dir's name)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--decoder", choices=("greedy", "beam"),
                        help="CTC runs: decoder (default: ctc.decoder of the run's config)")
    parser.add_argument("--beam", type=int, help="CTC and transducer runs: beam size (default: "
                        "ctc.beam / transducer.beam; `sprune decode` fuses LMs)")
    parser.add_argument("--kenlm", metavar="FILE",
                        help="CTC runs with --decoder beam: a unit n-gram to fuse (`sprune lm "
                        "arpa --units RUN`; default: ctc.kenlm of the run's config)")
    parser.add_argument("--lm-weight", type=float, metavar="W",
                        help="CTC runs: weight of --kenlm (default: ctc.lm_weight)")
    parser.add_argument("--beam-tokens", type=int, metavar="N",
                        help="CTC runs with --decoder beam: units tried per frame (default: "
                        "ctc.beam_tokens)")


def evaluate_run(run_dir: Path, data: str, name: str | None = None, experiment: Any = None,
                 device: str = "auto") -> dict[str, float]:
    """Evaluate a run's final model on the data dir `data`; write <run_dir>/eval_<name>.json
    (name: the data dir's name by default) and return the metrics. `experiment` is loaded
    from `run_dir` when not given."""
    from sprune.experiment import load_experiment
    from sprune.prune.methods.base import load_model_state
    from sprune.training import resolve_device

    if experiment is None:
        experiment = load_experiment(run_dir)
    dataset = experiment.dataset(data)
    if len(dataset) == 0:
        raise UserError(f"{data}: no utterances to evaluate")
    model = experiment.build_model()
    load_model_state(model, run_dir / "final")
    model.to(resolve_device(device))
    model.eval()
    with torch.no_grad():
        if is_pathways_run(run_dir):
            metrics = evaluate_each_pathway(run_dir, experiment, model, dataset, data)
        else:
            metrics = experiment.evaluate(model, dataset)
    name = name or Path(data).name
    atomic_write_text(run_dir / f"eval_{name}.json", json.dumps(metrics, indent=1) + "\n")
    print(f"{run_dir} on {data}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return metrics


def is_pathways_run(run_dir: Path) -> bool:
    outcome = run_dir / "outcome.json"
    return outcome.is_file() and json.loads(outcome.read_text()).get("method") == "pathways" \
        and (run_dir / "pathways").is_dir()


def evaluate_each_pathway(run_dir: Path, experiment: Any, model: Any, dataset: Any,
                          data: str) -> dict[str, float]:
    """A pathways run: each language's utterances through that language's pathway."""
    from sprune.prune.methods.pathways import evaluate_pathways, load_pathways

    masks = load_pathways(run_dir)
    tags = dataset.languages()
    if tags is None:
        raise UserError(f"{data}: no utt2lang; a pathways run decodes each language with its "
                        "own pathway, so the data dir needs the language of every utterance")
    unknown = sorted(set(tags) - set(masks))
    if unknown:
        raise UserError(f"{data}: language '{unknown[0]}' has no pathway in {run_dir} "
                        f"(pathways: {', '.join(masks)}); evaluate on its languages only")
    present = {lang: masks[lang] for lang in masks if lang in set(tags)}
    subsets = {lang: dataset.subset([u for u, t in zip(dataset.utts, tags) if t == lang])
               for lang in present}
    return evaluate_pathways(model, present,
                             lambda m, lang: experiment.evaluate(m, subsets[lang]))


def run(args: argparse.Namespace) -> int:
    from sprune.experiment import load_experiment

    run_dir = Path(args.run_dir)
    if not (run_dir / "final").is_dir():
        raise UserError(f"{run_dir}/final is missing; the run has not finished "
                        "(run `sprune prune` for it first)")
    experiment = load_experiment(run_dir)
    if args.beam is not None and args.beam < 1:
        raise UserError(f"--beam must be at least 1, got {args.beam}")
    if experiment.task == "transducer" and args.decoder is None:
        experiment.config.transducer.beam = args.beam or experiment.config.transducer.beam
    elif any(v is not None for v in (args.decoder, args.beam, args.kenlm, args.lm_weight,
                                     args.beam_tokens)):
        if experiment.task != "ctc":
            raise UserError(f"--decoder / --beam / --kenlm / --lm-weight / --beam-tokens apply to "
                            f"CTC runs; {run_dir} is a '{experiment.task}' run")
        ctc = experiment.config.ctc
        ctc.decoder = args.decoder or ctc.decoder
        ctc.beam = args.beam or ctc.beam
        ctc.kenlm = args.kenlm if args.kenlm is not None else ctc.kenlm
        ctc.lm_weight = args.lm_weight if args.lm_weight is not None else ctc.lm_weight
        ctc.beam_tokens = args.beam_tokens if args.beam_tokens is not None else ctc.beam_tokens
    evaluate_run(run_dir, args.data, args.name, experiment, device=args.device)
    return 0
