"""`sprune superb`: export through s3prl, the task command line, and the Table-1 collection
from result.yaml files laid out as s3prl's problem classes write them."""
from __future__ import annotations

import json
import shlex

import pytest
import torch
import yaml

from sprune.structured.masked import MaskedUpstream
from sprune.structured.shrink_from_masks import shrink_masked
from sprune.structured.structures import Structures
from sprune.superb.s3prl_tasks import read_task_result
from sprune.upstream import UpstreamModel, load_upstream, save_upstream, tiny_config


def shrunk_upstream(path):
    torch.manual_seed(0)
    masked = MaskedUpstream(UpstreamModel(tiny_config("wavlm")), Structures()).eval()
    with torch.no_grad():
        masked.gates.gate("layers.0.ffn_units").log_alpha[:40] = -10.0
        masked.gates.gate("layers.1.attention").log_alpha.fill_(-10.0)
    save_upstream(shrink_masked(masked), path)
    return path


def test_export_loads_the_shrunk_upstream_through_s3prl(tmp_path, cli):
    source = shrunk_upstream(tmp_path / "shrunk")
    result = cli("superb", "export", "--upstream", source, "--out", tmp_path / "s3prl")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "s3prl" / "export.json").read_text())
    assert report["num_layers"] == 3 and report["hidden_sizes"] == [32]
    assert report["downsample_rate"] == 320
    batch, frames, dim = report["featurizer_output"]     # s3prl's own frame count
    assert batch == 2 and dim == 32 and frames in (49, 50)
    assert report["featurizer_lengths"][0] == frames and report["featurizer_lengths"][1] < frames
    assert sorted(p.name for p in (tmp_path / "s3prl" / "upstream").iterdir()) == [
        "config.json", "model.safetensors"]
    bad = cli("superb", "export", "--upstream", tmp_path / "nope", "--out", tmp_path / "x")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    # The SUPERB stage's first check: s3prl's problem classes need pandas.
    try:
        import pandas  # noqa: F401
        has_pandas = True
    except ModuleNotFoundError:
        has_pandas = False
    check = cli("superb", "check")
    if not has_pandas:
        assert check.returncode == 2 and "need the Python module 'pandas'" in check.stderr
        assert "pip install pandas pytz" in check.stderr
        return
    assert check.returncode == 0, check.stderr
    # What the recipe's SUPERB stage does first: s3prl's problem class builds the upstream
    # by name and its featurizer (the learned weighted sum) with the ASR task's defaults.
    from s3prl.problem import SuperbASR

    problem = SuperbASR()
    defaults = problem.default_config()
    upstream = problem.build_upstream({"name": "sprune",
                                       "path_or_url": str(tmp_path / "s3prl" / "upstream")})
    featurizer = problem.build_featurizer(defaults["build_featurizer"], upstream)
    assert defaults["build_model"]["upstream_trainable"] is False
    wavs, lengths = torch.randn(1, 8000), torch.tensor([8000])
    hidden, hidden_lengths = upstream(wavs, lengths)
    features, _ = featurizer(hidden, hidden_lengths)
    assert features.shape[-1] == featurizer.output_size == 32


def test_command_runs_the_s3prl_problem_through_the_bridge(cli):
    result = cli("superb", "command", "--task", "SF", "--upstream", "exp/s", "--root", "/d/snips",
                 "--out", "exp/superb/pruned/SF")
    words = shlex.split(result.stdout)
    assert words[:5] == ["python", "-m", "sprune.upstream.s3prl_bridge", "s3prl.main", "SuperbSF"]
    assert words[words.index("--build_upstream.name") + 1] == "sprune"
    assert words[words.index("--build_upstream.path_or_url") + 1] == "exp/s"


def write_result(row, task, metrics):
    folder = row / task / "evaluate" / "valid_best" / "test"
    folder.mkdir(parents=True)
    (folder / "result.yaml").write_text(yaml.safe_dump(metrics))


def test_collect_makes_table_1_with_the_superb_score(tmp_path, cli):
    refs = tmp_path / "refs.yaml"
    refs.write_text("IC: {fbank: 10.0, sota: 90.0}\nASR: {fbank: 20.0, sota: 4.0}\n"
                    "SF_F1: {fbank: 70.0, sota: 90.0}\nSF_CER: {fbank: 50.0, sota: 20.0}\n")
    write_result(tmp_path / "dense", "IC", {"accuracy": 0.5, "loss": 1.0})
    write_result(tmp_path / "dense", "ASR", {"wer": 0.08, "cer": 0.03})
    write_result(tmp_path / "pruned", "SF", {"slot_type_f1": 0.8, "slot_value_cer": 0.35})
    up = shrunk_upstream(tmp_path / "up")
    result = cli("superb", "collect", "--row", f"dense={tmp_path / 'dense'}",
                 "--row", f"pruned={tmp_path / 'pruned'}", "--params", f"pruned={up}",
                 "--references", refs, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "out" / "RESULTS.md").read_text()
    # dense: IC 500, ASR 750 -> 625; pruned: SF mean(500, 500) = 500 (hand computation).
    assert "| dense | - | 50.00 | 8.00 | - | - | 625.00 | ASR,IC |" in text
    size = load_upstream(str(up))[0].num_parameters()
    assert f"| pruned | {size / 1e6:.2f} M | - | - | 80.00 | 35.00 | 500.00 | SF |" in text
    csv = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert csv[0] == "upstream,params,IC,ASR,SF_F1,SF_CER,superb_s"
    assert csv[1] == "dense,,50.0,8.0,,,625.00"


def test_missing_or_wrong_results_are_user_errors(tmp_path):
    from sprune.errors import UserError

    with pytest.raises(UserError, match="no evaluate"):
        read_task_result("IC", tmp_path / "IC")
    write_result(tmp_path, "IC", {"wer": 0.1})
    with pytest.raises(UserError, match="no 'accuracy'"):
        read_task_result("IC", tmp_path / "IC")
    with pytest.raises(UserError, match="unknown SUPERB task"):
        read_task_result("XX", tmp_path / "IC")


def test_speaker_verification_reads_the_best_checkpoint_and_several_results_are_refused(tmp_path):
    from sprune.errors import UserError

    # s3prl's ASV problem: one result.yaml per checkpoint, the best in best_result.yaml.
    for step, eer in (("step_90000", 0.30), ("step_180000", 0.05)):
        folder = tmp_path / "SV" / "evaluate" / "test" / step
        folder.mkdir(parents=True)
        (folder / "result.yaml").write_text(yaml.safe_dump({"EER": eer}))
    with pytest.raises(UserError, match="2 results"):
        read_task_result("SV", tmp_path / "SV")
    (tmp_path / "SV" / "evaluate" / "test" / "best_result.yaml").write_text(
        yaml.safe_dump({"EER": 0.05}))
    assert read_task_result("SV", tmp_path / "SV") == {"SV": pytest.approx(5.0)}


def test_finished_says_whether_a_task_has_its_test_result(tmp_path, cli):
    done = cli("superb", "finished", "--task", "IC", "--out", tmp_path / "IC")
    assert done.returncode == 1 and "no test result yet" in done.stdout
    write_result(tmp_path, "IC", {"accuracy": 0.5})
    done = cli("superb", "finished", "--task", "IC", "--out", tmp_path / "IC")
    assert done.returncode == 0 and "IC finished: IC 50.00" in done.stdout
    # a result collect would refuse is an error, not "finished" (nor "run it again")
    write_result(tmp_path, "SF", {"accuracy": 0.5})
    done = cli("superb", "finished", "--task", "SF", "--out", tmp_path / "SF")
    assert done.returncode == 2 and "no 'slot_type_f1'" in done.stderr
