"""WER of a transducer with each LM of an LM pruning study fused (paper 002's ASR table) ->
RESULTS.md, results.csv and plots.

Inputs: an LM experiment folder (`sprune lm results` reads it: every LM run with its
parameters, FLOPs per token and perplexities) and a transducer run folder in which `sprune
decode` wrote one result per LM, `decode_<prefix><LM run name>/result.json`, plus the
decoding without an LM, `decode_<baseline>/result.json`. Written beside RESULTS.md:

  RESULTS.md        the decoding without an LM and with the dense LM, the table of every LM
                    (method, criterion, schedule, target, parameters, MFLOPs/token, test
                    perplexity, LM weight, dev and test WER), paper 002's three questions
                    answered by test WER (`sprune.lm.report`'s comparisons), plots
  results.csv       that table, unformatted
  wer_vs_params.png, wer_vs_flops.png
                    one panel per criterion, one line per method x schedule, the dense LM,
                    the from-scratch LMs and the no-LM WER as references
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from sprune.errors import UserError
from sprune.io import atomic_write_text, read_json_object
from sprune.lm import report as lm_report
from sprune.lm.report import LMRun
from sprune.report import markdown_table

PLOTS = {"params": "wer_vs_params.png", "flops": "wer_vs_flops.png"}
METRIC = "wer_test"
FIX = "run that `sprune decode` again"


def read_decode_result(path: Path) -> dict[str, Any]:
    """A `sprune decode` result.json: its chosen weights, tuned dev WER and test WER (%)."""
    doc = read_json_object(path, fix=FIX)
    tests = doc.get("test")
    if not isinstance(tests, dict) or len(tests) != 1:
        raise UserError(f"{path}: expected the result of one test set under 'test'; decode "
                        "each test set into its own folder (--name)")
    (test_name, test), = tests.items()
    if not isinstance(test, dict) or not isinstance(test.get("wer"), (int, float)):
        raise UserError(f"{path}: no test 'wer'; {FIX}")
    tuning = doc.get("tuning") or []
    chosen = [row for row in tuning
              if all(row.get(k) == doc.get(k) for k in ("lm_weight", "lodr_weight", "length_bonus"))]
    return {"test": 100 * float(test["wer"]), "test_set": test_name,
            "dev": 100 * float(chosen[0]["wer"]) if chosen else None,
            "lm_weight": doc.get("lm_weight"), "lodr_weight": doc.get("lodr_weight"),
            "length_bonus": doc.get("length_bonus"),
            "beam": doc.get("beam"), "decoder": doc.get("decoder"),
            "utterances": test.get("utterances"), "ref_words": test.get("ref_words"),
            "rtf": float(test.get("rtf", 0.0))}


def attach_wer(runs: Sequence[LMRun], asr_run: Path, prefix: str) -> dict[str, dict[str, Any]]:
    """Set `run.wer` of every LM run that has a decoding result; returns those results by
    LM run name."""
    results = {}
    for run in runs:
        path = asr_run / f"decode_{prefix}{run.name}" / "result.json"
        if path.is_file():
            result = read_decode_result(path)
            run.wer = {k: result[k] for k in ("dev", "test") if result[k] is not None}
            results[run.name] = result
    return results


def noise_note(result: dict[str, Any]) -> str:
    """How much one word moves the test WER, so that small differences are read as noise."""
    words = result.get("ref_words")
    if not words:
        return ""
    return (f" The test set has {result.get('utterances')} utterances and {words:,} reference "
            f"words: one word is {100 / words:.2f} WER points, so differences of a few tenths "
            "of a point are a handful of words (one seed, one test set: no spread measured).")


def weights_text(result: dict[str, Any]) -> str:
    """'0.3 / 0 / 1.5': the LM weight, LODR weight and length bonus a decoding used."""
    return " / ".join(f"{result.get(k) or 0:g}" for k in ("lm_weight", "lodr_weight",
                                                          "length_bonus"))


def runs_table(runs: Sequence[LMRun], results: dict[str, dict[str, Any]]) -> str:
    """Every LM with a result; the lowest test WER of each target size in bold."""
    best: dict[str, float] = {}
    for r in runs:
        if r.kind != "dense" and "test" in r.wer:
            best[r.target] = min(best.get(r.target, float("inf")), r.wer["test"])
    rows = []
    for r in runs:
        if r.name not in results:
            continue
        result = results[r.name]
        test = f"{r.wer['test']:.2f}"
        if r.kind != "dense" and r.wer["test"] == best[r.target]:
            test = f"**{test}**"
        rows.append([r.name, r.kind if r.kind != "pruned" else r.method or "-",
                     r.criterion or "-", r.schedule or "-", r.target, f"{r.params:,}",
                     "-" if r.flops_per_token is None else f"{r.flops_per_token / 1e6:.3f}",
                     "-" if r.test_ppl is None else f"{r.test_ppl:.2f}",
                     weights_text(result),
                     "-" if r.wer.get("dev") is None else f"{r.wer['dev']:.2f}", test])
    return markdown_table(["LM", "method", "criterion", "schedule", "target", "params",
                           "MFLOPs/token", "test ppl", "LM / LODR / bonus", "dev WER %",
                           "test WER %"],
                          rows)


def csv_text(runs: Sequence[LMRun], results: dict[str, dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["lm_run", "kind", "method", "criterion", "schedule", "target_params",
                     "params", "flops_per_token", "test_ppl", "lm_weight", "lodr_weight",
                     "length_bonus", "dev_wer", "test_wer", "rtf"])
    for r in runs:
        if r.name in results:
            res = results[r.name]
            writer.writerow([r.name, r.kind, r.method or "", r.criterion or "", r.schedule or "",
                             r.target_params or "", r.params, r.flops_per_token or "",
                             "" if r.test_ppl is None else r.test_ppl, res["lm_weight"],
                             res["lodr_weight"], res["length_bonus"],
                             "" if res["dev"] is None else res["dev"],
                             res["test"], res["rtf"]])
    return buffer.getvalue()


def render(runs: Sequence[LMRun], results: dict[str, dict[str, Any]],
           baseline: dict[str, Any] | None, title: str, note: str,
           plots: dict[str, str]) -> str:
    fused = [r for r in runs if r.name in results]
    parts = [f"# {title}\n"]
    if note:
        parts.append(note.strip() + "\n")
    any_result = next(iter(results.values()))
    parts.append(
        f"Test set `{any_result['test_set']}`, {any_result['decoder']} search at beam "
        f"{any_result['beam']} (`sprune decode`). Each LM is fused with the weight that gave "
        "the lowest dev WER on its grid (LM weight, LODR weight and length bonus; dev WER "
        "at those values). "
        "params, MFLOPs/token and test ppl are the LM's, from its `sprune lm eval` (the LM "
        "recipe's RESULTS.md explains them). Bold: the lowest test WER of each target size."
        + noise_note(any_result) + "\n")
    lines = []
    if baseline is not None:
        lines.append(f"- without an LM: test WER **{baseline['test']:.2f} %**")
    for r in fused:
        if r.kind == "dense":
            lines.append(f"- with the dense LM ({r.params:,} parameters, test ppl "
                         f"{'-' if r.test_ppl is None else f'{r.test_ppl:.2f}'}): test WER "
                         f"**{r.wer['test']:.2f} %** at LM / LODR / bonus "
                         f"{weights_text(results[r.name])}"
                         + (f" ({r.wer['test'] - baseline['test']:+.2f} points)"
                            if baseline is not None else ""))
    if lines:
        parts.append("\n".join(lines) + "\n")
    parts.append("## LMs\n\n" + runs_table(runs, results))
    parts.append("## Paper 002's questions, by WER\n\nThe comparisons of the LM recipe, made "
                 "with the test WER of each fused LM instead of its perplexity.\n")
    parts.append(lm_report._comparison_section(
        "### 1. Incremental vs one-shot pruning\n\n", lm_report.compare_schedules(fused, METRIC),
        "schedule", lm_report.SCHEDULE_ORDER, lm_report.ONE_SHOT, "incremental",
        ("method", "criterion", "target")))
    parts.append(lm_report._comparison_section(
        "### 2. Data-driven (Taylor) vs magnitude criterion\n\n",
        lm_report.compare_criteria(fused, METRIC), "criterion", lm_report.CRITERION_ORDER,
        lm_report.BASE_CRITERION, "taylor", ("method", "schedule", "target")))
    parts.append("### 3. Pruned vs same-size LMs trained from scratch\n\n"
                 + lm_report.scratch_section(lm_report.compare_scratch(fused, METRIC)))
    if plots:
        parts.append("## Plots\n\n" + "\n".join(f"![WER vs {axis}]({name})\n"
                                                for axis, name in plots.items()))
    return "\n".join(parts)


def write_fusion_results(asr_run: str | Path, lm_exp: str | Path, out: str | Path | None = None,
                         prefix: str = "lm_", baseline: str = "nolm", title: str | None = None,
                         note: str = "") -> Path:
    """Write RESULTS.md (`out`, default ASR_RUN/RESULTS.md), results.csv and the plots beside
    it, each atomically; returns the RESULTS.md path."""
    asr_run, lm_exp = Path(asr_run), Path(lm_exp)
    runs = lm_report.collect_lm_runs(lm_exp)
    results = attach_wer(runs, asr_run, prefix)
    if not results:
        raise UserError(f"{asr_run}: no decode_{prefix}<LM run>/result.json for any run of "
                        f"{lm_exp}; run the decoding stages first")
    base_path = asr_run / f"decode_{baseline}" / "result.json"
    base = read_decode_result(base_path) if base_path.is_file() else None
    out = Path(out) if out is not None else asr_run / "RESULTS.md"
    fused = [r for r in runs if r.name in results]
    levels = [("no LM", base["test"])] if base is not None else []
    plots = {axis: name for axis, name in PLOTS.items()
             if lm_report.plot_ppl(fused, axis, METRIC, out.parent / name, levels)}
    atomic_write_text(out.parent / "results.csv", csv_text(runs, results))
    atomic_write_text(out, render(runs, results, base,
                                  title or f"{asr_run.name}: WER with each LM of {lm_exp.name}",
                                  note, plots))
    return out
