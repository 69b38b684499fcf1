"""Pathways through `sprune prune` on the CTC and transducer tasks (two languages, tiny
upstream): Dynamic ASR Pathways from LAP and ASR Pathways from language-specific masks."""
from __future__ import annotations

import json

import pytest
import torch

from sprune.prune.mask import Mask
from sprune.upstream import UpstreamModel, save_upstream, tiny_config

TASKS = {
    "ctc": "task: ctc\nupstream: {upstream}\nctc: {{units: char}}\n",
    "transducer": ("task: transducer\nupstream: {upstream}\ntransducer: {{bpe: {bpe}, "
                   "decoder_dim: 16, joint_dim: 16}}\n"),
}
TRAIN = ("train: {max_steps: 6, batch_size: 4, lr: 1.0e-3, eval_every: 6, save_every: 3, "
         "device: cpu}\neval_batch_size: 8\n")
LANGS = ("en-US", "fr-FR")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from conftest import build_data_dir

    from sprune.lm.vocab import LMVocab

    root = tmp_path_factory.mktemp("pathways_tasks")
    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("wav2vec2")), root / "upstream")
    for name in ("train", "dev"):
        build_data_dir(root, n_utts=8, langs=LANGS, name=name, seconds=(0.6, 0.7),
                       with_intent=False)
    lines = [line.split(maxsplit=1)[1] for line in (root / "train" / "text").read_text().splitlines()]
    LMVocab.train(lines * 3, 40).save(root / "bpe.model")
    for task, text in TASKS.items():
        (root / f"{task}.yaml").write_text(
            text.format(upstream=root / "upstream", bpe=root / "bpe.model") + TRAIN)
    (root / "dynamic_lap.yaml").write_text(
        "method: pathways\ndynamic: true\ncriterion: taylor\ncriterion_batches: 1\n"
        "sparsity: 0.5\nsparsity_schedule: [0.4, 0.5]\nround_steps: 3\nadapt_at: 1\n")
    return root


def prune(cli, root, task, method, out, *extra):
    done = cli("prune", "--config", root / f"{task}.yaml", "--method", method, "--train",
               root / "train", "--dev", root / "dev", "--out", root / task / out, *extra)
    assert done.returncode == 0, done.stderr
    return root / task / out


@pytest.mark.parametrize("task", sorted(TASKS))
def test_dynamic_pathways_from_lap(workspace, cli, task):
    run = prune(cli, workspace, task, workspace / "dynamic_lap.yaml", "dynamic_lap")
    outcome = json.loads((run / "outcome.json").read_text())
    assert outcome["extra"]["languages"] == list(LANGS)
    assert [e["kind"] for e in outcome["extra"]["events"]] == ["adapt", "prune", "adapt"]
    metric = "wer"
    assert {f"{metric}/{lang}" for lang in LANGS} <= set(outcome["dev"])
    masks = [Mask.load(run / "pathways" / lang) for lang in LANGS]
    assert all(m.sparsity() == pytest.approx(0.5, abs=0.01) for m in masks)
    assert Mask.load(run / "mask") == masks[0].union(masks[1])
    assert outcome["achieved_sparsity"] == pytest.approx(Mask.load(run / "mask").sparsity(),
                                                         abs=1e-3)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_asr_pathways_from_language_specific_masks(workspace, cli, task, tmp_path):
    root = workspace
    masks = {}
    for lang, method in zip(LANGS, ("mpi", "rp")):
        run = prune(cli, root, task, method, f"{method}_mask", "--sparsity", "0.5",
                    "--no-retrain")
        masks[lang] = run / "mask"
    conf = tmp_path / "pathways.yaml"
    conf.write_text("method: pathways\nsparsity: 0.5\npathway_masks:\n" + "".join(
        f"  {lang}: {path}\n" for lang, path in masks.items()))
    run = prune(cli, root, task, conf, "pathways")
    for lang in LANGS:
        assert Mask.load(run / "pathways" / lang) == Mask.load(masks[lang])
    outcome = json.loads((run / "outcome.json").read_text())
    assert outcome["extra"]["initialisation"] == "language-specific"
    assert outcome["extra"]["events"] == []


def test_export_one_pathway_as_a_standalone_run(workspace, cli, tmp_path):
    from sprune.upstream import load_upstream

    root = workspace
    run = root / "ctc" / "dynamic_lap"
    if not (run / "outcome.json").is_file():
        prune(cli, root, "ctc", root / "dynamic_lap.yaml", "dynamic_lap")
    out = tmp_path / "pathway_fr"
    done = cli("pathways", "export", run, "--lang", "fr-FR", "--out", out)
    assert done.returncode == 0, done.stderr
    mask = Mask.load(run / "pathways" / "fr-FR")
    assert Mask.load(out / "mask") == mask
    upstream, _ = load_upstream(str(out / "upstream"))
    params = dict(upstream.named_parameters())
    kept = 0
    for name, keep in mask.items():   # task-model names: upstream.<name>
        weight = params[name.removeprefix("upstream.")]
        assert not weight[~keep].any()
        kept += int(weight[keep].count_nonzero())
    assert kept == mask.num_kept()
    outcome = json.loads((out / "outcome.json").read_text())
    source = json.loads((run / "outcome.json").read_text())
    assert outcome["dev"]["wer"] == source["dev"]["wer/fr-FR"]
    assert outcome["achieved_sparsity"] == pytest.approx(mask.sparsity())
    done = cli("evaluate", out, "--data", root / "dev", "--name", "dev", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    evaluated = json.loads((out / "eval_dev.json").read_text())
    assert evaluated["wer/fr-FR"] == pytest.approx(source["dev"]["wer/fr-FR"])
    # the pathways run itself decodes each language through its own pathway
    done = cli("evaluate", run, "--data", root / "dev", "--name", "dev", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    both = json.loads((run / "eval_dev.json").read_text())
    assert both["wer/fr-FR"] == pytest.approx(evaluated["wer/fr-FR"])
    assert both["wer"] == pytest.approx((both["wer/fr-FR"] + both["wer/en-US"]) / 2)
    assert both["wer/en-US"] == pytest.approx(source["dev"]["wer/en-US"])


def test_export_bad_input_is_one_line(workspace, cli, tmp_path):
    root = workspace
    run = root / "ctc" / "dynamic_lap"
    if not (run / "outcome.json").is_file():
        prune(cli, root, "ctc", root / "dynamic_lap.yaml", "dynamic_lap")
    for args, message in (
            ((run, "--lang", "it-IT"), "has no pathway for 'it-IT'; its languages: en-US, fr-FR"),
            ((tmp_path, "--lang", "fr-FR"), "outcome.json is missing")):
        done = cli("pathways", "export", *args, "--out", tmp_path / "x")
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    from conftest import build_data_dir

    italian = build_data_dir(tmp_path, n_utts=2, langs=("it-IT",), name="it", seconds=0.6,
                             with_intent=False)
    done = cli("evaluate", run, "--data", italian, "--device", "cpu")
    assert done.returncode == 2 and "language 'it-IT' has no pathway" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_init_from_starts_from_a_finished_runs_weights(workspace, cli, tmp_path):
    """--init-from: the method starts (and rewinds) from the run's final weights: with a zero
    learning rate, MPI's final model is the dense run's weights times its mask."""
    from safetensors.torch import load_file

    root = workspace
    dense = prune(cli, root, "ctc", "dense", "dense_for_init")
    tokenizer = dense / "tokenizer.json"
    run = prune(cli, root, "ctc", "mpi", "mpi_from_dense", "--sparsity", "0.5", "--init-from",
                dense, "--set", "train.lr=0", "--set", f"ctc.tokenizer={tokenizer}")
    start = load_file(str(dense / "final" / "tensors.safetensors"))
    end = load_file(str(run / "final" / "tensors.safetensors"))
    mask = Mask.load(run / "mask")
    assert start.keys() == end.keys()
    for key, weight in start.items():
        name = key.split(".", 1)[1]   # the state's "model." prefix
        expected = weight * mask[name] if name in mask else weight
        assert torch.equal(end[key], expected), key
    doc = json.loads((run / "experiment.json").read_text())
    assert doc["init_from"] == str(dense.resolve())
    done = cli("prune", "--config", root / "ctc.yaml", "--method", "mpi", "--train",
               root / "train", "--dev", root / "dev", "--out", tmp_path / "x", "--init-from",
               tmp_path)
    assert done.returncode == 2 and "no final/ weights there" in done.stderr


def test_analyze_plots_the_pathways_of_each_pathways_run(workspace, cli):
    root = workspace
    run = root / "transducer" / "dynamic_lap"
    if not (run / "outcome.json").is_file():
        prune(cli, root, "transducer", root / "dynamic_lap.yaml", "dynamic_lap")
    done = cli("analyze", root / "transducer")
    assert done.returncode == 0, done.stderr
    out = root / "transducer" / "analysis"
    text = (out / "ANALYSIS.md").read_text()
    assert "(f) Language pathways" in text and "pathways_iou_dynamic_lap.png" in text
    for png in ("pathways_iou_dynamic_lap.png", "pathways_sharing_dynamic_lap.png"):
        assert (out / png).stat().st_size > 1000
    rows = (out / "pathways.csv").read_text().splitlines()
    assert rows[0].startswith("run,pair,iou,used_by_0,used_by_1,used_by_2")
    assert rows[1].startswith("dynamic_lap,en-US|fr-FR,")
