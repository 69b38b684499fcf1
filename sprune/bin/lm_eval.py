"""Perplexity, parameters, FLOPs per token and per-token latency of LMs, side by side.

  sprune lm eval exp/lm/dense exp/lm/omp_s0.50 exp/lm/lowrank_5M --text data/lm/dev.txt
  sprune lm eval exp/lm/dense exp/lm/shrunk --text data/lm/test.txt --latency --threads 1
  sprune lm eval exp/lm/dense --text data/lm/dev.txt --out exp/lm/dense_dev.json

Prints one table row per LM and writes one JSON per LM: <LM_DIR>/eval_<text>.json (dev.txt
-> eval_dev.json), or --out for a single LM. An existing result newer than the LM's
model.safetensors, the text and the BPE model, and made from them, is reused: as it is when
it holds the FLOPs at this --latency-context (and, with --latency, a latency of the same
settings), else its perplexity is kept and the rest measured. --force measures everything.

  ppl         exp(NLL per predicted token) over the text's sentences, each scored from <sos>
              with <eos> predicted at its end (ESPnet's lm_calc_perplexity count). Lines are
              normalised as LM text is (lower case, no punctuation); lines left empty are
              skipped. The BPE model is the LM folder's bpe.model unless --bpe is given.
  params      non-zero / total parameters, embeddings included: "non-zero" is the model's
              size as the pruning targets mean it (a masked model keeps zeros in dense
              matrices; a shrunk one has none).
  FLOPs/token multiply-adds x 2 of one cached decoding step after --latency-context tokens
              (Linear layers, attention, output layer; see sprune.lm.metrics). A masked model
              runs dense kernels, so this is its cost too; the JSON also has the theoretical
              count if zero weights were skipped (flops_per_token_nonzero_theoretical).
  ms/token    with --latency: median time of one cached step() advancing --latency-batch
              hypotheses by one token at context --latency-context, on --threads CPU threads
              (or the GPU of --device).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from sprune.errors import UserError
from sprune.io import atomic_write_text

EVAL_PREFIX = "eval_"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lm_dirs", nargs="+", metavar="LM_DIR",
                        help="LM folders (written by `sprune lm train`, `prune`, `shrink`, "
                             "`import`)")
    parser.add_argument("--text", required=True,
                        help="text to score, one sentence per line (plain or .gz), e.g. "
                             "data/lm/dev.txt")
    parser.add_argument("--bpe", help="sentencepiece BPE model (default: each LM folder's "
                                      "bpe.model)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="sentences per perplexity batch (default 32)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--latency", action="store_true",
                        help="also time per-token latency of cached decoding")
    parser.add_argument("--latency-batch", type=int, default=8,
                        help="hypotheses advanced per timed step (default 8, a beam of 8)")
    parser.add_argument("--latency-context", type=int, default=50,
                        help="tokens in the cache before the timed step; also the context "
                             "of FLOPs/token (default 50)")
    parser.add_argument("--latency-steps", type=int, default=20,
                        help="timed steps per repeat (default 20)")
    parser.add_argument("--latency-repeats", type=int, default=5,
                        help="repeats; the median is reported (default 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads while timing (default 1)")
    parser.add_argument("--out", help="JSON file to write (only with one LM_DIR; default "
                                      "<LM_DIR>/eval_<text name>.json)")
    parser.add_argument("--force", action="store_true",
                        help="measure again even when an up-to-date result exists")


def text_name(path: str | Path) -> str:
    """`data/lm/dev.txt` (or dev.txt.gz) -> `dev`: the <name> of eval_<name>.json."""
    name = Path(path).name.removesuffix(".gz")
    return name.removesuffix(".txt") or name


def _check_options(args: argparse.Namespace) -> None:
    for option, value, least in (("--batch-size", args.batch_size, 1),
                                 ("--latency-batch", args.latency_batch, 1),
                                 ("--latency-context", args.latency_context, 0),
                                 ("--latency-steps", args.latency_steps, 1),
                                 ("--latency-repeats", args.latency_repeats, 1),
                                 ("--threads", args.threads, 1)):
        if value < least:
            raise UserError(f"{option} {value} must be at least {least}")
    if args.out is not None and len(args.lm_dirs) > 1:
        raise UserError(f"--out names one file but {len(args.lm_dirs)} LM folders were given; "
                        "drop --out (each LM gets <LM_DIR>/eval_<text>.json)")
    if len({str(Path(d).resolve()) for d in args.lm_dirs}) < len(args.lm_dirs):
        raise UserError("an LM folder is given twice; list each one once")


def _latency_settings(args: argparse.Namespace, device: str) -> dict[str, Any]:
    return {"batch": args.latency_batch, "context": args.latency_context,
            "steps": args.latency_steps, "repeats": args.latency_repeats,
            "threads": args.threads, "device": device}


def _previous(out: Path, folder: Path, text: Path, bpe: Path, force: bool
              ) -> dict[str, Any] | None:
    """The result at `out` when its perplexity is up to date: newer than the LM's weights,
    the text and the BPE model, and made from the same text and BPE model. Else None."""
    from sprune.lm.checkpoint import WEIGHTS_FILE

    if force or not out.is_file():
        return None
    mtime = out.stat().st_mtime
    if any(not p.is_file() or p.stat().st_mtime >= mtime
           for p in (folder / WEIGHTS_FILE, text, bpe)):
        return None
    try:
        doc = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (not isinstance(doc, dict) or doc.get("text") != str(text) or doc.get("bpe") != str(bpe)
            or not {"ppl", "parameters", "flops_context"} <= doc.keys()):
        return None
    return doc


def _complete(doc: dict[str, Any], args: argparse.Namespace, device: str) -> bool:
    """Whether `doc` already holds the FLOPs (and latency, when asked for) of these options."""
    if doc["flops_context"] != args.latency_context:
        return False
    return not args.latency or (doc.get("latency") or {}).get("settings") == \
        _latency_settings(args, device)


def evaluate_lm(folder: Path, lines: list[str], text: Path, bpe: Path, dataset: Any,
                args: argparse.Namespace, device: Any,
                previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every metric of the LM in `folder` on `dataset` (the text encoded with `bpe`); the
    perplexity of an up-to-date `previous` result is kept instead of computed again."""
    from sprune.lm.checkpoint import load_lm
    from sprune.lm.metrics import (FLOPS_COUNTED, count_parameters, flops_per_token,
                                   flops_per_token_nonzero, perplexity, token_latency)

    model, document = load_lm(folder, device)
    if previous is None:
        ppl = perplexity(model, dataset, batch_size=args.batch_size,
                         progress=sys.stderr.isatty())
        ppl["text_lines"] = len(lines)
        ppl["empty_lines"] = int(getattr(dataset, "empty_lines", 0))
        latency = None
    else:
        keys = ("ppl", "nll_per_token", "num_tokens", "num_sentences", "unk_tokens",
                "text_lines", "empty_lines")
        ppl = {k: previous[k] for k in keys if k in previous}
        latency = previous.get("latency")
    context = args.latency_context
    result: dict[str, Any] = {
        "lm": str(folder), "text": str(text), "bpe": str(bpe), **ppl,
        "parameters": count_parameters(model),
        "flops_per_token": flops_per_token(model, context),
        "flops_per_token_nonzero_theoretical": flops_per_token_nonzero(model, context),
        "flops_context": context, "flops_counted": FLOPS_COUNTED,
        "info": document.get("info", {}), "latency": latency}
    if args.latency:
        timing = token_latency(model, batch=args.latency_batch, context=context,
                               steps=args.latency_steps, threads=args.threads,
                               repeats=args.latency_repeats)
        result["latency"] = {"ms_per_token": timing["ms_per_token"],
                             "ms_per_hypothesis_token": timing["ms_per_hypothesis_token"],
                             "repeat_ms": timing["repeat_ms"],
                             "settings": _latency_settings(args, str(device))}
    return result


def format_table(results: list[dict[str, Any]], names: list[str] | None = None) -> str:
    """The Markdown table of `sprune lm eval`: one row per result (named by `names`, else
    by the result's "lm"), then what the FLOPs and ms columns measured."""
    lines = ["| LM | ppl | params non-zero / total | MFLOPs/token | ms/token |",
             "|---|---:|---:|---:|---:|"]
    for i, r in enumerate(results):
        params, latency = r["parameters"], r.get("latency")
        name = names[i] if names else r["lm"]
        ms = f"{latency['ms_per_token']:.3f}" if latency else "-"
        lines.append(f"| {name} | {r['ppl']:.2f} | {params['nonzero']:,} / {params['total']:,} "
                     f"| {r['flops_per_token'] / 1e6:.4g} | {ms} |")
    context = results[0]["flops_context"]
    footer = f"FLOPs: one cached decoding step after {context} tokens (dense kernels)."
    with_latency = [r["latency"]["settings"] for r in results if r.get("latency")]
    if with_latency:
        s = with_latency[0]
        footer += (f" ms/token: median of {s['repeats']} x {s['steps']} steps of "
                   f"{s['batch']} hypotheses on {s['device']}, {s['threads']} thread(s).")
    return "\n".join(lines) + "\n\n" + footer + "\n"


def run(args: argparse.Namespace) -> int:
    from sprune.lm.checkpoint import read_lm_document, vocab_path
    from sprune.lm.dataset import SentenceDataset
    from sprune.lm.text import read_lines
    from sprune.lm.vocab import LMVocab, check_vocab_matches
    from sprune.training import resolve_device

    _check_options(args)
    device = resolve_device(args.device)
    # Check every LM and its BPE model before measuring any, so a typo in the last folder
    # fails at once.
    plans = []
    for name in args.lm_dirs:
        folder = Path(name)
        document = read_lm_document(folder)
        vocab_size = document["config"].get("vocab_size")
        bpe = Path(args.bpe) if args.bpe else vocab_path(folder)
        if bpe is None:
            raise UserError(f"{folder} holds no bpe.model; pass the LM's BPE model with --bpe")
        vocab = LMVocab.load(bpe)
        check_vocab_matches(vocab, vocab_size, folder)
        out = Path(args.out) if args.out else folder / f"{EVAL_PREFIX}{text_name(args.text)}.json"
        plans.append((folder, bpe.resolve(), vocab, out))
    text = Path(args.text).resolve()
    lines = read_lines(text)
    datasets: dict[str, Any] = {}
    results, notes = [], []
    for folder, bpe, vocab, out in plans:
        previous = _previous(out, folder, text, bpe, args.force)
        if previous is not None and _complete(previous, args, str(device)):
            results.append(previous)
            notes.append(f"{out}: up to date, reused (--force measures again)")
            continue
        dataset = None
        if previous is None:
            # LMs pruned from one dense model carry copies of one BPE model: encode once.
            key = hashlib.sha256(bpe.read_bytes()).hexdigest()
            if key not in datasets:
                datasets[key] = SentenceDataset(lines, vocab, progress=sys.stderr.isatty())
                if len(datasets[key]) == 0:
                    raise UserError(f"{text}: no sentence left once normalised (every line "
                                    "is empty or punctuation); give one sentence per line")
            dataset = datasets[key]
        result = evaluate_lm(folder, lines, text, bpe, dataset, args, device, previous)
        atomic_write_text(out, json.dumps(result, indent=1) + "\n")
        results.append(result)
        notes.append(f"{out}: written" + ("" if previous is None else
                                          " (perplexity reused, FLOPs / latency measured)"))
    print(format_table(results, [str(plan[0]) for plan in plans]), end="")
    print("\n".join(notes))
    return 0

