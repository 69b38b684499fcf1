"""Training under torchrun with 2 CPU processes (gloo): the same result as one process with
the global batch, identical masks on every process, resume after a killed rank, and the
one-line errors of a distributed launch.

Each test starts real processes with `python -m torch.distributed.run --standalone` (about
5 s each), the one-process runs too (torchrun with 1 process: a plain run), so both sides
compute with one thread each; they are marked `distributed` and run in `make test` like
every other test.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import build_data_dir, checkout_env
from sprune.checkpoint import load_state
from sprune.prune.mask import Mask
from sprune.upstream import UpstreamModel, save_upstream, tiny_config

pytestmark = pytest.mark.distributed

CTC = """task: ctc
upstream: {upstream}
ctc: {{units: char, dropout: 0.0}}
train: {{max_steps: {steps}, batch_size: 4, lr: 1.0e-3, warmup_ratio: 0.0, eval_every: 3,
        save_every: 3, device: cpu, bucket_by_length: false}}
eval_batch_size: 3
"""
PARP = "method: parp\nsparsity: 0.5\nreprune_every: 2\ncriterion: taylor\ncriterion_batches: 3\n"


def torchrun(nproc: int, *args: str | Path, script: Path | None = None,
             background: bool = False, **env: str):
    """`sprune ARGS` (or `script ARGS`) in `nproc` processes under torchrun."""
    target = [str(script)] if script else ["-m", "sprune"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(nproc), *target, *map(str, args)]
    environment = checkout_env(OMP_NUM_THREADS="1", **env)
    if background:
        return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)


def error_lines(result: subprocess.CompletedProcess, command: str) -> list[str]:
    """sprune's error lines in a failed torchrun's output (torchrun adds its own report)."""
    assert result.returncode != 0
    return [line for line in result.stderr.splitlines()
            if line.startswith(f"sprune {command}: error: ")]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny upstream, equal-length utterances (no padding: a padded batch normalises
    differently when it is split) and the PARP configs."""
    root = tmp_path_factory.mktemp("distributed")
    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("wav2vec2")), root / "upstream")
    for name in ("train", "dev"):
        build_data_dir(root, n_utts=8, langs=("en-US", "fr-FR"), name=name, seconds=1.0)
    (root / "ctc.yaml").write_text(CTC.format(upstream=root / "upstream", steps=6))
    (root / "ctc_long.yaml").write_text(CTC.format(upstream=root / "upstream", steps=24))
    (root / "parp.yaml").write_text(PARP)
    return root


def prune_args(root: Path, out: str, config: str = "ctc.yaml") -> list:
    return ["prune", "--config", root / config, "--method", root / "parp.yaml",
            "--train", root / "train", "--dev", root / "dev", "--out", root / "exp" / out]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_state(run / "final")["model"]


def assert_same_weights(a: Path, b: Path, atol: float = 1e-4) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    assert worst < atol, f"weights differ by {worst}"


def test_two_processes_train_and_prune_as_one_with_the_global_batch(workspace):
    """PARP with Taylor scores (re-pruned every 2 updates): 2 processes x 2 utterances give
    the weights, mask and dev metrics of 1 process x 4; the 2-process run leaves one log."""
    root = workspace
    assert torchrun(1, *prune_args(root, "one")).returncode == 0
    two = torchrun(2, *prune_args(root, "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_weights(root / "exp" / "one", root / "exp" / "two")
    assert Mask.load(root / "exp" / "one" / "mask") == Mask.load(root / "exp" / "two" / "mask")
    logs = [[json.loads(line) for line in (root / "exp" / run / "finetune" / "log.jsonl")
             .read_text().splitlines() if '"eval"' in line] for run in ("one", "two")]
    assert len(logs[1]) == 2   # rank 0 alone wrote the log
    for a, b in zip(*logs):
        assert a["cer"] == pytest.approx(b["cer"]) and a["step"] == b["step"]
    assert two.stdout.count("exp/two: parp sparsity") == 1   # rank 0 alone prints


def test_masks_are_checked_to_agree_across_processes(tmp_path):
    """The agreement check stops a run whose processes hold different masks."""
    script = tmp_path / "disagree.py"
    script.write_text(
        "import os, sys, torch\n"
        "from sprune.errors import UserError\n"
        "from sprune.training import distributed\n"
        "distributed.init_from_environment()\n"
        "rank = int(os.environ['RANK'])\n"
        "same = torch.tensor([True, False, True])\n"
        "distributed.check_same_tensors([same], 'the test mask')\n"
        "try:\n"
        "    distributed.check_same_tensors([torch.tensor([True, rank == 1])], 'the test mask')\n"
        "except UserError as err:\n"
        "    print(err)\n"
        "    sys.exit(3)\n")
    result = torchrun(2, script=script)
    assert result.returncode != 0
    assert "the test mask differs between processes (rank 0 vs rank(s) 1)" in result.stdout


@pytest.fixture(scope="module")
def uninterrupted(workspace) -> Path:
    """A 24-update PARP run on 2 processes, never stopped."""
    whole = torchrun(2, *prune_args(workspace, "whole", "ctc_long.yaml"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    return workspace / "exp" / "whole"


def test_killed_rank_resumes_to_the_uninterrupted_mask(workspace, uninterrupted):
    """kill -9 of one rank after a checkpoint; the same command again resumes and ends with
    the mask and weights of the uninterrupted 2-process run."""
    root = workspace
    run = root / "exp" / "killed"
    job = torchrun(2, *prune_args(root, "killed", "ctc_long.yaml"), background=True)
    try:
        deadline = time.time() + 300
        while not (run / "finetune" / "checkpoint" / "last").is_dir():
            assert job.poll() is None and time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
        children = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True)
        workers = [int(p) for p in children.stdout.split()]
        assert len(workers) == 2, children.stdout
        os.kill(workers[-1], signal.SIGKILL)
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode != 0 and not (run / "outcome.json").exists()
    resumed = torchrun(2, *prune_args(root, "killed", "ctc_long.yaml"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert '"resume"' in (run / "finetune" / "log.jsonl").read_text()
    assert Mask.load(uninterrupted / "mask") == Mask.load(run / "mask")
    assert_same_weights(uninterrupted, run, atol=1e-6)


def test_a_two_process_run_resumes_on_one_process(workspace, uninterrupted, tmp_path):
    """The checkpoint holds the global state (step, data position, optimizer, RNGs): a run
    stopped on 2 processes after its checkpoint at update 12 resumes on 1 process and ends
    where the uninterrupted 2-process run ends."""
    root = workspace
    script = tmp_path / "stop_at_12.py"
    script.write_text(
        "import os, sys\n"
        "from sprune.training import Trainer\n"
        "save = Trainer.save_checkpoint\n"
        "def save_then_stop(self):\n"
        "    save(self)\n"
        "    if self.step == 12:\n"
        "        os._exit(9)\n"
        "Trainer.save_checkpoint = save_then_stop\n"
        "from sprune.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    stopped = torchrun(2, *prune_args(root, "switch", "ctc_long.yaml"), script=script)
    assert stopped.returncode != 0
    state = load_state(root / "exp" / "switch" / "finetune" / "checkpoint" / "last")
    assert state["counters"]["step"] == 12 and state["counters"]["samples_seen"] == 48
    assert torchrun(1, *prune_args(root, "switch", "ctc_long.yaml")).returncode == 0
    assert Mask.load(uninterrupted / "mask") == Mask.load(root / "exp" / "switch" / "mask")
    assert_same_weights(uninterrupted, root / "exp" / "switch")


def test_a_batch_that_does_not_split_is_one_line(workspace):
    result = torchrun(2, *prune_args(workspace, "odd"), "--set", "train.batch_size=3")
    lines = error_lines(result, "prune")
    assert lines == ["sprune prune: error: train.batch_size 3 is the global batch and must "
                     "split evenly over the 2 processes (WORLD_SIZE); use a multiple of 2"]


def test_a_bad_input_every_process_meets_is_one_line(workspace):
    result = torchrun(2, *prune_args(workspace, "no_upstream"), "--upstream",
                      workspace / "missing")
    lines = error_lines(result, "prune")
    assert len(lines) == 1 and "missing" in lines[0]


def test_configs_that_differ_between_processes_are_one_line(workspace, tmp_path):
    script = tmp_path / "differ.py"
    script.write_text("import os, sys\nfrom sprune.cli import main\n"
                      "extra = ['--set', 'train.lr=0.5'] if os.environ['RANK'] == '1' else []\n"
                      "sys.exit(main(sys.argv[1:] + extra))\n")
    result = torchrun(2, *prune_args(workspace, "differ"), script=script)
    lines = error_lines(result, "prune")
    assert len(lines) == 1 and "the train config or training set size differs between " \
        "processes (rank 0 vs rank(s) 1)" in lines[0]


def test_a_missing_rendezvous_variable_is_one_line(workspace, cli, monkeypatch):
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0"),
                       ("MASTER_PORT", "29555")):
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    result = cli(*prune_args(workspace, "no_addr"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("sprune prune: error: distributed run: MASTER_ADDR not set")
    assert not (workspace / "exp" / "no_addr").exists()


def test_l0prune_two_processes_as_one(tmp_path):
    """Structured L0 pruning (hard-concrete gates, Lagrangian, distillation): the gates and
    weights after 4 updates of 2 x 2 utterances are those of 1 x 4."""
    import yaml

    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("wav2vec2")), tmp_path / "up")
    train = build_data_dir(tmp_path, n_utts=8, seconds=0.3, name="train")
    config = {"upstream": str(tmp_path / "up"), "max_seconds": 0.4,
              "structured": {"target_sparsity": 0.3},
              "train": {"max_steps": 4, "batch_size": 4, "lr": 1e-3, "eval_every": 4,
                        "save_every": 4, "log_every": 1, "device": "cpu",
                        "bucket_by_length": False}}
    (tmp_path / "l0.yaml").write_text(yaml.safe_dump(config))
    args = ["l0prune", "--config", tmp_path / "l0.yaml", "--train", train]
    assert torchrun(1, *args, "--out", tmp_path / "one", "--threads", "1").returncode == 0
    two = torchrun(2, *args, "--out", tmp_path / "two")
    assert two.returncode == 0, two.stderr[-3000:]
    one_state = load_state(tmp_path / "one" / "checkpoint" / "last")["model"]
    two_state = load_state(tmp_path / "two" / "checkpoint" / "last")["model"]
    assert one_state.keys() == two_state.keys()
    worst = max(float((one_state[k].float() - two_state[k].float()).abs().max())
                for k in one_state)
    assert worst < 1e-4, f"weights differ by {worst}"


def test_lm_training_two_processes_as_one(tmp_path):
    """LM training: sentences of different lengths (the loss is a mean over tokens, each
    process weighs its part by its tokens), 3 updates of 2 x 4 sentences = 1 x 8 to 5e-5
    (float32 sums in another order; Adam divides by sqrt(v), which magnifies them for the
    smallest gradients; weighting by sentences instead of tokens: 2e-3)."""
    from sprune.lm.vocab import LMVocab

    words = "the cat dog hen sat ran on by a mat door red big old".split()
    sentences = [" ".join(words[(i * 3 + k) % len(words)] for k in range(3 + i % 5))
                 for i in range(40)]
    text = tmp_path / "text"
    text.mkdir()
    (text / "train.txt").write_text("\n".join(sentences) + "\n")
    (text / "dev.txt").write_text("\n".join(sentences[:6]) + "\n")
    LMVocab.train(sentences, 30).save(tmp_path / "bpe.model")
    config = Path(__file__).resolve().parents[1] / "conf" / "lm" / "train.yaml"
    args = ["lm", "train", "--config", config, "--text", text, "--bpe", tmp_path / "bpe.model"]
    tiny = ["--set", "model.embed_dim=8", "--set", "model.d_model=16", "--set",
            "model.ffn_dim=16", "--set", "model.layers=1", "--set", "model.heads=2",
            "--set", "model.dropout=0.0", "--set", "model.attention_dropout=0.0",
            "--set", "train.max_steps=3", "--set", "train.batch_size=8", "--set",
            "train.device=cpu", "--set", "train.eval_every=3", "--set", "train.warmup_ratio=0.0"]
    assert torchrun(1, *args, "--out", tmp_path / "one", *tiny).returncode == 0
    two = torchrun(2, *args, "--out", tmp_path / "two", *tiny)
    assert two.returncode == 0, two.stderr[-3000:]
    from safetensors.torch import load_file

    one = load_file(str(next((tmp_path / "one" / "final").glob("*.safetensors"))))
    other = load_file(str(next((tmp_path / "two" / "final").glob("*.safetensors"))))
    worst = max(float((one[k] - other[k]).abs().max()) for k in one)
    assert worst < 5e-5, f"weights differ by {worst}"


def test_downstream_two_processes_share_the_extraction(workspace):
    """`sprune downstream` under torchrun: each process extracts its share of the
    features, all heads train on all of them: the numbers of one process."""
    root = workspace
    args = ["downstream", "--upstream", f"dense={root / 'upstream'}", "--train", root / "train",
            "--dev", root / "dev", "--test", root / "dev", "--intent-epochs", "5",
            "--ctc-epochs", "2", "--threads", "1"]
    assert torchrun(1, *args, "--out", root / "exp" / "ds_one").returncode == 0
    two = torchrun(2, *args, "--out", root / "exp" / "ds_two")
    assert two.returncode == 0, two.stderr[-3000:]

    def numbers(run: str) -> dict:
        document = json.loads((root / "exp" / run / "downstream.json").read_text())
        return json.loads(json.dumps(document).replace("ds_one", "ds_two"),
                          object_hook=lambda d: {k: v for k, v in d.items()
                                                 if "seconds" not in k})

    assert numbers("ds_one") == numbers("ds_two")


def test_dynamic_pathways_of_a_transducer_two_processes_as_one(workspace):
    """Dynamic ASR Pathways (LAP start, Taylor adaptation per language, monolingual
    batches) on the transducer task: 2 processes end with the masks of one (no dropout:
    its random draws depend on how the batch is split) up to near-ties: the Taylor scores
    are summed in another order, which flipped 2 of 16,384 weights of one pathway when
    measured (the processes of one run always agree bitwise: `check_same_tensors`)."""
    from sprune.lm.vocab import LMVocab

    root = workspace
    lines = [line.split(maxsplit=1)[1] for line in (root / "train" / "text").read_text().splitlines()]
    LMVocab.train(lines * 3, 40).save(root / "bpe.model")
    (root / "rnnt.yaml").write_text(
        f"task: transducer\nupstream: {root / 'upstream'}\ntransducer: {{bpe: {root / 'bpe.model'}, "
        "decoder_dim: 16, joint_dim: 16, dropout: 0.0, decoder_dropout: 0.0, "
        "decoder_embed_dropout: 0.0}\ntrain: {max_steps: 6, batch_size: 4, lr: 1.0e-3, "
        "warmup_ratio: 0.0, eval_every: 6, save_every: 3, device: cpu, bucket_by_length: false}\n"
        "eval_batch_size: 3\n")
    (root / "lap.yaml").write_text(
        "method: pathways\ndynamic: true\ncriterion: taylor\ncriterion_batches: 2\n"
        "sparsity: 0.5\nsparsity_schedule: [0.4, 0.5]\nround_steps: 3\nadapt_at: 1\n")
    args = ["prune", "--config", root / "rnnt.yaml", "--method", root / "lap.yaml",
            "--train", root / "train", "--dev", root / "dev"]
    assert torchrun(1, *args, "--out", root / "exp" / "lap_one").returncode == 0
    two = torchrun(2, *args, "--out", root / "exp" / "lap_two")
    assert two.returncode == 0, two.stderr[-3000:]
    for lang in ("en-US", "fr-FR"):
        one = Mask.load(root / "exp" / "lap_one" / "pathways" / lang)
        other = Mask.load(root / "exp" / "lap_two" / "pathways" / lang)
        assert one.sparsity() == other.sparsity() and one.iou(other) > 0.999
    assert_same_weights(root / "exp" / "lap_one", root / "exp" / "lap_two", atol=2e-3)
    outcomes = [json.loads((root / "exp" / run / "outcome.json").read_text())
                for run in ("lap_one", "lap_two")]
    assert outcomes[0]["dev"] == pytest.approx(outcomes[1]["dev"], abs=0.02)
