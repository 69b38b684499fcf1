"""`bench/pathways.py --small` as a shell runs it: one table per section, every number parses,
the speed-ups are the ratios of the numbers beside them, --json holds the same rows.
Structure only: whether sparse is faster is not asserted (timed tests are flaky on shared
machines)."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, checkout_env

SCRIPT = REPO_ROOT / "bench" / "pathways.py"
KERNEL_COLUMNS = ["format", "torch call", "runs on CPU", "kernel", "values stored",
                  "max abs diff", "error (first line)"]
SPEED_COLUMNS = ["layer (in -> out)", "sparsity", "format", "kernel", "values stored",
                 "dense ms", "sparse ms", "speed-up", "sparse faster", "max abs diff"]
FORMATS = ["BSR 8x1", "CSR", "BSR 8x8", "semi-structured 2:4"]


def number(cell: str) -> float:
    """'50.0 %', '0.38x', '0.01149', '3.6e-07' as a float."""
    return float(cell.removesuffix("%").removesuffix("x").strip())


def tables(stdout: str) -> list[list[dict[str, str]]]:
    """Every markdown table printed: a list of rows, each column header -> cell."""
    found: list[list[str]] = []
    previous = ""
    for line in stdout.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                found.append([])
            found[-1].append(line)
        previous = line
    out = []
    for lines in found:
        header = [cell.strip() for cell in lines[0].strip("|").split("|")]
        assert set(lines[1].replace("|", "").replace("-", "").replace(":", "")) <= {""}
        rows = []
        for line in lines[2:]:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            assert len(cells) == len(header), line
            rows.append(dict(zip(header, cells)))
        out.append(rows)
    return out


def run(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(SCRIPT), "--small", "--threads", "1", *args],
                          capture_output=True, text=True, env=checkout_env(OMP_NUM_THREADS="1"),
                          timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench_pathways") / "pathways.json"
    done = run("--json", str(out))
    assert "Warning" not in done.stderr
    return done.stdout, json.loads(out.read_text())


def test_kernel_table_says_which_formats_run(small):
    stdout, saved = small
    kernels = tables(stdout)[0]
    assert list(kernels[0]) == KERNEL_COLUMNS
    assert [row["format"] for row in kernels] == FORMATS
    by_format = {row["format"]: row for row in kernels}
    assert by_format["CSR"]["runs on CPU"] == "yes"            # the exact 8x1 pattern runs
    assert by_format["semi-structured 2:4"]["runs on CPU"] == "NO"   # CUDA only
    for row in kernels:
        if row["runs on CPU"] == "yes":
            assert row["kernel"] and not row["error (first line)"]
            assert number(row["max abs diff"]) < 1e-5
        else:
            assert row["error (first line)"] and not row["kernel"]
    assert number(by_format["CSR"]["values stored"]) == pytest.approx(30.0, abs=0.5)
    assert [r["format"] for r in saved["sections"]["kernels"]["rows"]] == FORMATS


def test_speed_table_ratios_come_from_the_numbers_beside_them(small):
    stdout, saved = small
    kernels, speed, _, _ = tables(stdout)
    assert list(speed[0]) == SPEED_COLUMNS
    runnable = [row["format"] for row in kernels if row["runs on CPU"] == "yes"]
    assert "BSR 8x1" not in runnable or "BSR 8x1" in {r["format"] for r in speed}
    assert len(speed) == 3 * 3 * len(runnable)           # shapes x sparsities x formats
    assert [r["layer (in -> out)"] for r in speed[::3 * len(runnable)]] == [
        "64 -> 64", "64 -> 256", "256 -> 64"]
    rows = saved["sections"]["block_sparse"]["rows"]
    assert len(rows) == len(speed)
    for cells, row in zip(speed, rows):
        assert cells["format"] == row["format"] and cells["format"] in runnable
        dense, sparse = number(cells["dense ms"]), number(cells["sparse ms"])
        assert number(cells["speed-up"]) == pytest.approx(dense / sparse, abs=0.006, rel=0.002)
        assert row["speedup"] == row["dense_ms"] / row["sparse_ms"]
        assert row["dense_ms"] == statistics.median(row["dense_times_ms"])
        assert row["sparse_ms"] == statistics.median(row["sparse_times_ms"])
        assert len(row["sparse_times_ms"]) == saved["settings"]["rounds"] == 2
        assert cells["sparse faster"] == ("yes" if dense > sparse else "NO") or \
            dense == pytest.approx(sparse, rel=1e-3)
        assert number(cells["sparsity"]) == pytest.approx(100 * row["target_sparsity"], abs=0.3)
        assert number(cells["max abs diff"]) < 1e-5
        if row["format"] == "CSR":   # CSR stores exactly the kept weights
            assert row["stored"] == pytest.approx(1 - row["sparsity"])
    same_shape = [r["dense_ms"] for r in rows if r["shape"] == "64x64"]
    assert len(set(same_shape)) == 1   # one dense timing per shape, shared by its rows
    assert saved["machine"]["threads"] == 1


def test_sections_are_chosen_by_name():
    stdout = run("--sections", "kernels").stdout
    assert len(tables(stdout)) == 1
    assert "## Which sparse formats run" in stdout and "block-sparse linear layer" not in stdout


def test_pathway_step_and_adaptation_ratios(small):
    stdout, saved = small
    _, _, step, adaptation = tables(stdout)
    row = saved["sections"]["pathway_step"]["rows"][0]
    assert step[0]["model"] == "tiny" and len(row["pathway_times_ms"]) == 2
    assert row["ratio"] == row["pathway_ms"] / row["dense_ms"]
    assert number(step[0]["pathway / dense"]) == pytest.approx(row["ratio"], abs=0.0006)
    assert step[0]["<= 1.1x"] == ("yes" if row["ratio"] <= 1.1 else "NO")
    row = saved["sections"]["adaptation"]["rows"][0]
    assert row["events"] == 1   # the adaptation ran
    assert row["round_ms"] == pytest.approx(row["round_steps"] * row["step_ms"] + row["adapt_ms"])
    assert row["share"] == pytest.approx(row["adapt_ms"] / row["round_ms"])
    assert number(adaptation[0]["adaptation share of the round"]) == pytest.approx(
        100 * row["share"], abs=0.06)
