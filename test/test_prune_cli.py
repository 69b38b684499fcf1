"""`sprune prune / evaluate / results` end to end on a tiny upstream, and their user errors.

The CLI runs in-process (`sprune.cli.main`): the same code path as the `sprune` command, an
uncaught exception fails the test, and no torch import per call."""
from __future__ import annotations

import json

import pytest
import torch

from sprune.prune.mask import Mask
from sprune.upstream import UpstreamModel, save_upstream, tiny_config


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny random upstream, train/dev/test dirs and a fast fine-tuning config."""
    from conftest import build_data_dir

    root = tmp_path_factory.mktemp("prune_cli")
    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("wav2vec2")), root / "upstream")
    for name in ("train", "dev", "test"):
        build_data_dir(root, n_utts=8, langs=("en-US", "fr-FR"), name=name, seconds=(0.3, 0.4))
    (root / "ft.yaml").write_text(
        f"upstream: {root / 'upstream'}\nhead: {{hidden_dim: 16, embed_dim: 8}}\n"
        "train: {max_steps: 6, batch_size: 4, lr: 1.0e-3, eval_every: 3, save_every: 3, "
        "device: cpu}\n")
    (root / "parp.yaml").write_text("method: parp\nsparsity: 0.6\nreprune_every: 2\n")
    return root


def prune_args(root, out, method, *extra):
    return ["prune", "--config", root / "ft.yaml", "--method", method, "--train", root / "train",
            "--dev", root / "dev", "--out", root / "exp" / out, *extra]


def test_dense_parp_evaluate_results(workspace, cli):
    root = workspace
    for out, method in (("dense", "dense"), ("parp_s0.6", root / "parp.yaml")):
        done = cli(*prune_args(root, out, method))
        assert done.returncode == 0, done.stderr
        done = cli("evaluate", root / "exp" / out, "--data", root / "test", "--name", "test")
        assert done.returncode == 0, done.stderr
    outcome = json.loads((root / "exp" / "parp_s0.6" / "outcome.json").read_text())
    assert outcome["method"] == "parp" and outcome["achieved_sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert Mask.load(root / "exp" / "parp_s0.6" / "mask").check_fits is not None
    evals = json.loads((root / "exp" / "parp_s0.6" / "eval_test.json").read_text())
    assert set(evals) == {"accuracy", "accuracy/en-US", "accuracy/fr-FR"}
    done = cli("results", root / "exp")
    assert done.returncode == 0, done.stderr
    table = (root / "exp" / "RESULTS.md").read_text()
    assert "| parp_s0.6 | parp | 60.0 | 60.0 |" in table and "| dense | dense | 0.0 | 0.0 |" in table
    assert (root / "exp" / "accuracy_vs_sparsity.png").stat().st_size > 1000
    again = cli(*prune_args(root, "dense", "dense"))
    assert "finished before" in again.stdout


@pytest.mark.parametrize("case, message", [
    ("sparsity", "[0, 1)"),
    ("method", "dense, rp, mpi, omp, imp, parp, parp-p"),
    ("criterion", "known: magnitude, random, taylor"),
    ("empty", "empty"),
    ("config_key", "unknown key 'epocs'"),
    ("test_missing", "no such data dir"),
    ("test_names", "would both write eval_test.json"),
])
def test_bad_input_is_one_line_and_exit_2(workspace, cli, tmp_path, case, message):
    root = workspace
    args = prune_args(root, f"bad_{case}", "mpi")
    if case == "sparsity":
        args += ["--sparsity", "1.5"]
    elif case == "method":
        args[args.index("mpi")] = "lottery"
    elif case == "criterion":
        (tmp_path / "p.yaml").write_text("method: mpi\ncriterion: fisher\n")
        args[args.index("mpi")] = tmp_path / "p.yaml"
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        for name in ("wav.scp", "utt2spk", "utt2intent"):
            (tmp_path / "empty" / name).write_text("")
        args[args.index(root / "train")] = tmp_path / "empty"
    elif case == "config_key":
        (tmp_path / "ft.yaml").write_text("train: {epocs: 3}\n")
        args[args.index(root / "ft.yaml")] = tmp_path / "ft.yaml"
    elif case == "test_missing":
        args += ["--test", tmp_path / "nowhere"]
    elif case == "test_names":
        (tmp_path / "test").mkdir()
        args += ["--test", root / "test", "--test", tmp_path / "test"]
    done = cli(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (root / "exp" / f"bad_{case}" / "outcome.json").exists()


def test_prune_test_option_evaluates_like_sprune_evaluate(workspace, cli):
    root = workspace
    run = root / "exp" / "mpi_test_opt"
    done = cli(*prune_args(root, "mpi_test_opt", "mpi", "--test", root / "test"))
    assert done.returncode == 0, done.stderr
    at_the_end = json.loads((run / "eval_test.json").read_text())
    done = cli("evaluate", run, "--data", root / "test")
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "eval_test.json").read_text()) == at_the_end
    # a finished run evaluates only what is missing or older than outcome.json
    again = cli(*prune_args(root, "mpi_test_opt", "mpi", "--test", root / "test"))
    assert "nothing to do" in again.stdout
    (run / "eval_test.json").unlink()
    again = cli(*prune_args(root, "mpi_test_opt", "mpi", "--test", root / "test"))
    assert "evaluating it on" in again.stdout
    assert json.loads((run / "eval_test.json").read_text()) == at_the_end


def test_mask_for_another_model_names_the_parameter(workspace):
    from sprune.errors import UserError

    big = UpstreamModel(tiny_config("wav2vec2", embed_dim=48, num_heads=4))
    other = Mask.ones_like(big, [n for n, p in big.named_parameters() if p.ndim == 2])
    small = UpstreamModel(tiny_config("wav2vec2"))
    with pytest.raises(UserError, match="mask saved for another model: parameter '.*' has shape"):
        other.check_fits(small)


def test_data_driven_criteria_through_the_cli(workspace, cli, tmp_path):
    root = workspace
    # taylor: PARP re-prunes by |w * grad| on 2 training batches inside its run
    (tmp_path / "taylor.yaml").write_text("method: parp\nsparsity: 0.5\ncriterion: taylor\n"
                                          "criterion_batches: 2\nreprune_every: 3\n")
    done = cli(*prune_args(root, "parp_taylor", tmp_path / "taylor.yaml"))
    assert done.returncode == 0, done.stderr
    outcome = json.loads((root / "exp" / "parp_taylor" / "outcome.json").read_text())
    assert outcome["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    # wanda scores nn.Linear weights only: the conv extractor's kernels are refused
    (tmp_path / "wanda.yaml").write_text("method: mpi\ncriterion: wanda\n"
                                         "scope: transformer+extractor\n")
    done = cli(*prune_args(root, "mpi_wanda", tmp_path / "wanda.yaml"))
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert ("criterion 'wanda' scores nn.Linear weights only; "
            "'upstream.feature_extractor.conv_layers.0.conv.weight'") in done.stderr
    assert not (root / "exp" / "mpi_wanda" / "outcome.json").exists()


def test_experiment_scoring_batches_are_fixed_and_leave_the_rng_alone(workspace):
    from sprune.experiment import experiment_for_training, load_experiment_config

    root = workspace
    config = load_experiment_config(str(root / "ft.yaml"))
    experiment = experiment_for_training(config, str(root / "upstream"), str(root / "train"),
                                         str(root / "dev"))
    batches = experiment.context(None).train_batches
    state = torch.get_rng_state()
    first = list(batches(3))     # 8 utterances, batches of 4: crosses into a second epoch
    assert torch.equal(torch.get_rng_state(), state)
    again = list(batches(3))
    assert len(first) == 3 and [b["utt"] for b in first] == [b["utt"] for b in again]
    assert all(torch.equal(a["wavs"], b["wavs"]) for a, b in zip(first, again))
    assert sorted(u for b in first[:2] for u in b["utt"]) == sorted(experiment.train_set.utts)
