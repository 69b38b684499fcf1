"""The CTC decoding table of a run: every `sprune decode` result of a CTC run folder
(`decode_<name>/result.json`) as one row (decoder, beam, lexicon, LM, the weights tuned on
dev, dev and test WER / CER, real-time factor), written as a section of a Markdown file
(`## CTC decoding: <run>`), replacing that section when it is there already and keeping the
rest of the file (e.g. a recipe's RESULTS.md)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sprune.io import atomic_write_text
from sprune.report import markdown_table


def ctc_results(run_dir: Path) -> list[dict[str, Any]]:
    """The CTC `result.json` documents under `run_dir`, sorted by name (unreadable or
    non-CTC ones are skipped: they belong to another command)."""
    rows = []
    for path in sorted(run_dir.glob("decode_*/result.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("task") == "ctc":
            rows.append({**doc, "name": path.parent.name[len("decode_"):]})
    return rows


def _pct(value: Any) -> str:
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) else "-"


def decoding_table(results: list[dict[str, Any]]) -> str:
    """Markdown table, one row per result and test set, in the order given."""
    header = ["decoding", "decoder", "beam", "lexicon", "LM", "LM weight", "word score",
              "dev WER %", "test set", "test WER %", "test CER %", "RTF"]
    rows = []
    for doc in results:
        chosen = [r for r in doc.get("tuning") or []
                  if r.get("lm_weight") == doc.get("lm_weight")
                  and r.get("word_score") == doc.get("word_score")]
        dev = _pct(chosen[0].get("wer")) if chosen else "-"
        lm = doc.get("kenlm") or doc.get("lm")
        for test, metrics in (doc.get("test") or {}).items():
            rows.append([doc["name"], str(doc.get("decoder")),
                         str(doc.get("beam") if doc.get("decoder") != "greedy" else "-"),
                         "yes" if doc.get("lexicon") else "no",
                         Path(lm).name if lm else "-",
                         f"{doc.get('lm_weight', 0):g}" if lm else "-",
                         f"{doc.get('word_score', 0):g}" if doc.get("lexicon") else "-",
                         dev, test, _pct(metrics.get("wer")), _pct(metrics.get("cer")),
                         f"{metrics.get('rtf', 0):.4f}"])
    return markdown_table(header, rows)


def write_report_section(path: Path, run_dir: Path, note: str = "") -> None:
    """Write or replace the `## CTC decoding: <run_dir>` section of the Markdown file `path`."""
    title = f"## CTC decoding: {run_dir}"
    body = f"{title}\n\n{note.strip()}\n\n" if note.strip() else f"{title}\n\n"
    body += decoding_table(ctc_results(run_dir))
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == title), None)
    if start is None:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + body
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        rest = "".join(lines[end:])
        text = "".join(lines[:start]) + body + ("\n" + rest if rest else "")
    atomic_write_text(path, text)
