"""`bench/fusion_decode.py --small` as a shell runs it: both decoders with and without the LM,
every number parses, the ratios come from the numbers beside them, --json holds the rows.
Structure only: the timing targets are not asserted (timed tests are flaky on shared
machines)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, checkout_env

SCRIPT = REPO_ROOT / "bench" / "fusion_decode.py"


def test_small_run_prints_one_table_with_consistent_ratios(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--small", "--json", str(out)],
                          env=checkout_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| decoder | beam | LM weight | search s | search RTF | "
                               "decode RTF | WER %")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[1:]]
    assert [(r[0], r[2]) for r in rows] == [("espnet", "0"), ("sprune", "0"),
                                            ("espnet", "0.3"), ("sprune", "0.3")]
    seconds = {(r[0], r[2]): float(r[3]) for r in rows}
    saved = json.loads(out.read_text())["rows"]
    assert len(saved) == 4
    for row in saved:
        espnet = next(s for s in saved if s["decoder"] == "espnet"
                      and s["lm_weight"] == row["lm_weight"])
        assert row["speedup_vs_espnet"] == pytest.approx(espnet["seconds"] / row["seconds"])
    fused = next(s for s in saved if s["decoder"] == "sprune" and s["lm_weight"])
    plain = next(s for s in saved if s["decoder"] == "sprune" and not s["lm_weight"])
    assert fused["fusion_overhead"] == pytest.approx(fused["seconds"] / plain["seconds"] - 1)
    assert fused["decode_fusion_overhead"] == pytest.approx(
        fused["decode_rtf"] / plain["decode_rtf"] - 1)
    encoder = json.loads(out.read_text())["encoder_seconds"]
    audio = json.loads(out.read_text())["audio_seconds"]
    assert plain["decode_rtf"] == pytest.approx((plain["seconds"] + encoder) / audio)
    assert seconds[("sprune", "0")] == pytest.approx(plain["seconds"], abs=0.006)
