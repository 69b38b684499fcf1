"""The recipes' --ngpu / --num-nodes options (utils/launch.sh) and the SLURM example
(utils/slurm_torchrun.sh).

utils/launch.sh runs with a fake `sprune` and a fake `python` on PATH that print what they
were asked to run; the recipe scripts that use it parse and check the options (--help, bad
values) without running anything; asr.sh's training pool runs one torchrun job at a time
(fake commands that note when they start and end); the SLURM example runs with a fake
`srun` / `scontrol`. One test trains for real: egs/mini_minds/ic1 (ic.sh, stages 2-6) with
`--ngpu 2`, two CPU processes under torchrun with gloo (about 30 s on 2 cores; marked
`distributed`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "utils" / "launch.sh"
PARSE_OPTIONS = REPO / "utils" / "parse_options.sh"
SLURM = REPO / "utils" / "slurm_torchrun.sh"

# script -> the recipe folder it runs from (templates through a recipe that links them)
SCRIPTS = {
    "egs/TEMPLATE/ic1/ic.sh": "egs/mini_minds/ic1/ic.sh",
    "egs/TEMPLATE/asr1/asr.sh": "egs/mini_minds/asr1/asr.sh",
    "egs/TEMPLATE/asr1/pathways.sh": "egs/mini_mls/asr1/pathways.sh",
    "egs/TEMPLATE/asr1/transducer.sh": "egs/kjv/asr1/transducer.sh",
    "egs/TEMPLATE/lm1/lm.sh": "egs/kjv/lm1/lm.sh",
    "egs/mini_minds/ssl1/run.sh": "egs/mini_minds/ssl1/run.sh",
    "egs/mini_minds/superb1/run.sh": "egs/mini_minds/superb1/run.sh",
    "egs/superb/prune1/run.sh": "egs/superb/prune1/run.sh",
    "egs/mini_minds/asr1/run.sh": "egs/mini_minds/asr1/run.sh",
    "egs/commonvoice/asr1/run.sh": "egs/commonvoice/asr1/run.sh",
    "egs/librispeech/asr1/run.sh": "egs/librispeech/asr1/run.sh",
    "egs/librispeech/asr1/run_transducer.sh": "egs/librispeech/asr1/run_transducer.sh",
    "egs/minds14/ic1/run.sh": "egs/minds14/ic1/run.sh",
}
# run.sh scripts that parse their own options and pass --ngpu etc. on to a stage script
WRAPPERS = {"egs/mini_minds/asr1/run.sh", "egs/commonvoice/asr1/run.sh",
            "egs/librispeech/asr1/run.sh", "egs/librispeech/asr1/run_transducer.sh",
            "egs/minds14/ic1/run.sh"}
SHELL_FILES = ["utils/launch.sh", "utils/slurm_torchrun.sh", "egs/TEMPLATE/ic1/cmd.sh",
               "egs/TEMPLATE/job_pool.sh", "egs/TEMPLATE/seeds.sh", *SCRIPTS]

# prints its name and each argument in brackets: `sprune [prune] [--out] [a b]`
ECHO = '#!/bin/sh\nprintf "%s" "{name}"; for a in "$@"; do printf " [%s]" "$a"; done; echo\n'


def write_exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_bin(tmp_path) -> Path:
    """A folder with a `sprune` and a `python` that echo their arguments."""
    bin_dir = tmp_path / "bin"
    for name in ("sprune", "python"):
        write_exe(bin_dir / name, ECHO.format(name=name))
    return bin_dir


def launch(bin_dir: Path, *options: str, command: str = 'sprune_train prune --out "a b"'):
    """A script that sources launch.sh and parse_options.sh, checks, then runs `command`."""
    script = (f"set -euo pipefail\n. {LAUNCH}\n. {PARSE_OPTIONS}\nlaunch_check\n{command}\n")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["bash", "-c", script, "demo.sh", *options], env=env,
                          capture_output=True, text=True, timeout=30)


def one_error_line(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo.sh: "), done.stderr
    for word in words:
        assert word in lines[0]


def test_one_process_runs_plain_sprune(fake_bin):
    for options in ((), ("--ngpu", "1"), ("--ngpu", "1", "--num-nodes", "1")):
        done = launch(fake_bin, *options)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "sprune [prune] [--out] [a b]\n"


def test_ngpu_runs_torchrun_on_this_machine(fake_bin):
    done = launch(fake_bin, "--ngpu", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("python [-m] [torch.distributed.run] [--standalone] "
                           "[--nproc-per-node] [2] [-m] [sprune] [prune] [--out] [a b]\n")


def test_several_machines_meet_at_the_rendezvous_endpoint(fake_bin):
    done = launch(fake_bin, "--num-nodes", "2", "--node-rank", "1", "--ngpu", "4",
                  "--rdzv-endpoint", "node1:29400", "--rdzv-id", "job7",
                  command="sprune_train lm train --set train.lr=1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "python [-m] [torch.distributed.run] [--nnodes] [2] [--node-rank] [1] "
        "[--nproc-per-node] [4] [--rdzv-backend] [c10d] [--rdzv-endpoint] [node1:29400] "
        "[--rdzv-id] [job7] [-m] [sprune] [lm] [train] [--set] [train.lr=1]\n")


def test_several_machines_without_an_endpoint_is_one_line(fake_bin):
    one_error_line(launch(fake_bin, "--num-nodes", "2"), "--rdzv-endpoint")
    # sprune_train checks too, for a script that did not call launch_check
    script = f". {LAUNCH}\nnum_nodes=2\nsprune_train prune\necho not reached\n"
    env = dict(os.environ, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", "-c", script, "demo.sh"], env=env, capture_output=True,
                          text=True, timeout=30)
    one_error_line(done, "--num-nodes 2 needs --rdzv-endpoint")


@pytest.mark.parametrize("options, words", [
    (("--ngpu", "0"), ("--ngpu", "whole number >= 1", "'0'")),
    (("--ngpu", "two"), ("--ngpu", "'two'")),
    (("--ngpu", "-1"), ("--ngpu", "'-1'")),
    (("--ngpu", "1.5"), ("--ngpu", "'1.5'")),
    (("--ngpu", ""), ("--ngpu", "''")),
    (("--num-nodes", "0"), ("--num-nodes", "'0'")),
    (("--num-nodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1"), ("--node-rank", "'2'")),
    (("--node-rank", "x"), ("--node-rank", "'x'")),
])
def test_bad_values_are_one_line_and_exit_2(fake_bin, options, words):
    one_error_line(launch(fake_bin, *options), *words)


def test_launch_jobs_and_the_options_passed_on(fake_bin):
    command = ('echo "jobs $(launch_jobs 3)"; '
               f'bash -c \'. {LAUNCH}; . {PARSE_OPTIONS}; launch_check; sprune_train x\' '
               'inner.sh "${launch_opts[@]}"')
    done = launch(fake_bin, command=command)
    assert done.stdout == "jobs 3\nsprune [x]\n", done.stderr
    done = launch(fake_bin, "--ngpu", "03", "--num-nodes", "2", "--rdzv-endpoint", "h:5",
                  command=command)
    assert done.stdout.splitlines() == [
        "jobs 1",
        "python [-m] [torch.distributed.run] [--nnodes] [2] [--node-rank] [0] "
        "[--nproc-per-node] [3] [--rdzv-backend] [c10d] [--rdzv-endpoint] [h:5] "
        "[--rdzv-id] [sprune] [-m] [sprune] [x]"], done.stderr


def test_torchrun_uses_the_python_of_the_sprune_command(tmp_path, fake_bin):
    # a console script (#! line naming a venv's python) wins over `python` on PATH
    venv_python = write_exe(tmp_path / "venv" / "bin" / "python3.11",
                            ECHO.format(name="venv-python"))
    write_exe(fake_bin / "sprune", f"#!{venv_python}\nimport sys\n")
    done = launch(fake_bin, "--ngpu", "2")
    assert done.stdout.startswith("venv-python [-m] [torch.distributed.run] "), done.stderr


def test_scripts_offer_the_options_and_check_them():
    env = dict(os.environ, SPRUNE_VENV=str(REPO / "tools" / "venv"))
    for script, recipe_script in SCRIPTS.items():
        folder, name = (REPO / recipe_script).parent, "./" + Path(recipe_script).name
        done = subprocess.run([name, "--help"], cwd=folder, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0 and "--ngpu N" in done.stdout, (script, done.stderr)
        assert "--rdzv-endpoint HOST:PORT" in done.stdout, script
        done = subprocess.run([name, "--ngpu", "0"], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (script, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and "--ngpu must be" in done.stderr, \
            (script, done.stderr)


def test_shell_files_parse():
    for name in SHELL_FILES:
        done = subprocess.run(["bash", "-n", str(REPO / name)], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, (name, done.stderr)


def code_lines(script: Path) -> list[str]:
    """The script's lines without comments and without its help_message text."""
    lines, in_help = [], False
    for line in script.read_text().splitlines():
        if line.startswith('help_message="'):
            in_help = True
        if in_help:
            end = line.rstrip()
            in_help = not (end.endswith('"') and not end.endswith('\\"') and end != 'help_message="')
            continue
        code = line.split(" #")[0]
        if not code.lstrip().startswith("#"):
            lines.append(code)
    return lines


def test_training_commands_go_through_sprune_train():
    """Every training command of a script runs as `sprune_train ...`; the wrapper run.sh
    scripts that parse their own options pass them on to the stage script instead."""
    training = [c.split() for c in ("prune", "lm train", "lm prune", "pretrain", "l0prune")]
    for script in SCRIPTS:
        trained = False
        for line in code_lines(REPO / script):
            words = line.split()
            for i, word in enumerate(words):
                for command in training:
                    if words[i + 1:i + 1 + len(command)] == command:
                        assert word != "sprune", (script, line)
                        trained |= word == "sprune_train"
        passed_on = '"${launch_opts[@]}"' in (REPO / script).read_text()
        assert trained != passed_on, script
        assert passed_on == (script in WRAPPERS), script


def timeline_recipe(tmp_path: Path) -> tuple[Path, dict]:
    """A scratch asr1 recipe whose `sprune` and `python` note `start OUT` / `end OUT` in
    tmp/timeline, one second apart."""
    recipe = tmp_path / "egs" / "x" / "asr1"
    (recipe / "conf").mkdir(parents=True)
    for name in ("asr.sh", "path.sh"):
        (recipe / name).symlink_to(REPO / "egs" / "TEMPLATE" / "asr1" / name)
    (recipe / "utils").symlink_to(REPO / "utils")
    for name in ("finetune.yaml", "prune_rp.yaml", "prune_mpi.yaml"):
        (recipe / "conf" / name).write_text("{}\n")
    timeline = tmp_path / "timeline"
    note = ('#!/bin/bash\nwhile [ "$1" != --out ]; do shift; done\n'
            f'echo "start $2" >> {timeline}; sleep 1; echo "end $2" >> {timeline}\n')
    bin_dir = tmp_path / "bin"
    for name in ("sprune", "python"):
        write_exe(bin_dir / name, note)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               SPRUNE_VENV=str(tmp_path / "no-venv"))
    return recipe, env


@pytest.mark.parametrize("options, overlap, logs", [
    (["--ngpu", "1"], True, "log"),
    (["--ngpu", "2"], False, "log"),
    # another machine of a 2-machine run: the same jobs, its logs apart from node 0's
    (["--num-nodes", "2", "--node-rank", "1", "--rdzv-endpoint", "h:1"], False, "log/node1"),
])
def test_asr_training_pool_runs_one_torchrun_job_at_a_time(tmp_path, options, overlap, logs):
    recipe, env = timeline_recipe(tmp_path)
    done = subprocess.run(["./asr.sh", "--stage", "4", "--stop-stage", "4", "--nj", "2",
                           "--methods", "rp mpi", *options], cwd=recipe, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    events = [line.split()[0] for line in (tmp_path / "timeline").read_text().splitlines()]
    assert events == (["start", "start", "end", "end"] if overlap
                      else ["start", "end", "start", "end"])
    assert sorted(p.name for p in (recipe / "exp" / "finetune" / logs).glob("*.log")) == \
        ["prune.mpi_s0.5.log", "prune.rp_s0.5.log"]


def test_slurm_example_runs_the_recipe_on_every_machine(tmp_path):
    """utils/slurm_torchrun.sh with a fake `scontrol` and an `srun` that runs its command
    once per machine (SLURM_NODEID 0, 1; or once for --nodes=1) and a fake recipe."""
    bin_dir = tmp_path / "bin"
    write_exe(bin_dir / "scontrol", '#!/bin/sh\nprintf "gpu-a1\\ngpu-a2\\n"\n')
    write_exe(bin_dir / "srun", "#!/bin/bash\nnodes=2\n"
              'while [[ $1 == --* ]]; do [ "$1" != --nodes=1 ] || nodes=1; shift; done\n'
              'for ((n = 0; n < nodes; n++)); do SLURM_NODEID=$n SLURM_GPUS_ON_NODE=4 "$@"; done\n')
    write_exe(tmp_path / "egs" / "librispeech" / "asr1" / "run.sh",
              '#!/bin/sh\n{ printf run.sh; for a in "$@"; do printf " [%s]" "$a"; done; echo; }'
              f' >> {tmp_path}/calls\n')
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               SLURM_JOB_NODELIST="gpu-a[1-2]", SLURM_NNODES="2", SLURM_JOB_ID="77",
               SLURM_GPUS_PER_NODE="a100:4")
    done = subprocess.run(["bash", str(SLURM)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 4    # data on one machine, training on two, evaluation on one
    assert calls[0].endswith("[--stop-stage] [2]") and calls[3].endswith("[--stage] [6]")
    for rank, call in enumerate(calls[1:3]):
        assert call.endswith(f"[--stage] [3] [--stop-stage] [5] [--ngpu] [4] [--num-nodes] [2] "
                             f"[--node-rank] [{rank}] [--rdzv-endpoint] [gpu-a1:29400] "
                             "[--rdzv-id] [sprune-77]"), call


@pytest.mark.distributed
def test_intent_recipe_trains_with_two_processes(tmp_path, sprune_on_path):
    """egs/mini_minds/ic1 stages 2-6 (dense, OMP mask, OMP fine-tuning, evaluation,
    RESULTS.md) on a tiny random upstream with --ngpu 2: every training command runs under
    torchrun (2 CPU processes, gloo), rank 0 alone writes and prints."""
    import torch

    from conftest import build_data_dir
    from sprune.upstream import UpstreamModel, save_upstream, tiny_config

    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("wav2vec2")), tmp_path / "upstream")
    src = REPO / "egs" / "mini_minds" / "ic1"
    recipe = tmp_path / "egs" / "mini_minds" / "ic1"
    recipe.mkdir(parents=True)
    for entry in src.iterdir():   # linked, so data/ and exp/ are written here
        if entry.name not in ("data", "exp"):
            (recipe / entry.name).symlink_to(entry.resolve())
    (tmp_path / "utils").symlink_to(REPO / "utils")
    for name in ("train", "dev", "test"):   # stage 1 (speech synthesis) is not run
        build_data_dir(recipe / "data", n_utts=8, name=name, seconds=0.5)
    # a `python` for torchrun beside the fixture's `sprune`: this test's interpreter, noting
    # its arguments
    bin_dir = Path(sprune_on_path["PATH"].split(os.pathsep)[0])
    write_exe(bin_dir / "python", f'#!/bin/sh\necho "$*" >> {tmp_path}/python_calls\n'
              f'exec "{sys.executable}" "$@"\n')
    env = dict(sprune_on_path, SPRUNE_VENV=str(tmp_path / "no-venv"), OMP_NUM_THREADS="1")
    short = ("--set train.max_steps=3 --set train.batch_size=4 --set train.log_every=1 "
             "--set train.eval_every=3 --set train.save_every=3 --set eval_batch_size=4 "
             "--set train.device=cpu")
    done = subprocess.run(["./run.sh", "--stage", "2", "--methods", "omp", "--sparsities", "0.5",
                           "--upstream", tmp_path / "upstream", "--prune-opts", short,
                           "--ngpu", "2"],
                          cwd=recipe, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    calls = (tmp_path / "python_calls").read_text().splitlines()
    # stages 2 and 3 train (with stage 4 in the same call, stage 3 fine-tunes the subnetwork
    # too and stage 4 finds it finished); evaluation and results are sprune's
    assert len(calls) == 2
    for call in calls:
        assert call.startswith("-m torch.distributed.run --standalone --nproc-per-node 2 "
                               "-m sprune prune --config conf/finetune.yaml "), call
    exp = recipe / "exp" / "finetune"
    assert (exp / "RESULTS.md").read_text().startswith("# finetune: intent accuracy")
    assert not (exp / "FIDELITY.md").exists()   # no IMP or PARP run: no claim to check
    for run in ("dense", "omp_s0.5"):
        assert (exp / run / "eval_test.json").is_file()
        # rank 0 alone prints: the run scores the test set at the end of training (--test)
        assert done.stdout.count(f"exp/finetune/{run} on data/test: ") == 1, done.stdout
    assert "stage 4: exp/finetune/omp_s0.5 finished before; skipping" in done.stdout
    logs = sorted(exp.glob("*/*/log.jsonl"))
    assert {log.parent.parent.name for log in logs} == {"dense", "omp_s0.5"}
    for log in logs:   # rank 0 alone writes: one record per update and evaluation
        lines = log.read_text().splitlines()
        assert len(lines) == len(set(lines)), log
        records = [json.loads(line) for line in lines]
        keys = [(r["event"], r["step"]) for r in records]
        assert len(keys) == len(set(keys)), keys
        assert sum(r["event"] == "train" for r in records) == 3, keys
