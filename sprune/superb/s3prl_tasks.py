"""SUPERB downstream runs through s3prl's problem classes, and their results.

The recipe runs each task as

    python -m sprune.upstream.s3prl_bridge s3prl.main Superb<TASK> \\
        --target_dir exp/<tag>/superb/<row>/<TASK> --prepare_data.dataset_root ROOT \\
        --build_upstream.name sprune --build_upstream.path_or_url UPSTREAM_DIR [--config ...]

(s3prl 0.4.18's `s3prl.problem` classes carry SUPERB's default configs: frozen upstream,
`upstream_trainable: false`, and the featurizer's learned weighted sum of all layers). Each
writes `<target_dir>/evaluate/<checkpoint>/<test set>/result.yaml`; `collect_results` reads
them back into the metric names of `sprune.superb.score` (percentages; MTWV x 100).

`check_export` loads an upstream dir through s3prl's own `S3PRLUpstream` and `Featurizer`,
which is what every SUPERB task does first.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from sprune.errors import UserError

# SUPERB task -> s3prl problem class
PROBLEMS = {"PR": "SuperbPR", "ASR": "SuperbASR", "KS": "SuperbKS", "IC": "SuperbIC",
            "SID": "SuperbSID", "ER": "SuperbER", "SV": "SuperbASV", "SD": "SuperbSD",
            "SF": "SuperbSF"}
# SUPERB task -> {key in s3prl's result.yaml: metric name in the score references}
RESULT_KEYS = {"PR": {"per": "PR"}, "ASR": {"wer": "ASR"}, "KS": {"accuracy": "KS"},
               "IC": {"accuracy": "IC"}, "SID": {"accuracy": "SID"}, "ER": {"accuracy": "ER"},
               "SV": {"EER": "SV"}, "SD": {"der": "SD"},
               "SF": {"slot_type_f1": "SF_F1", "slot_value_cer": "SF_CER"}}
RESULT_FILE = "result.yaml"
BEST_RESULT_FILE = "best_result.yaml"   # speaker verification: the best checkpoint's EER
# What `import s3prl.problem` needed beside the rest of sprune's stack (found one by one;
# pinned in tools/requirements.txt since session 3).
EXTRA_PACKAGES = ("pandas", "pytz", "tzdata", "tensorboard", "absl-py", "sed_eval",
                  "dcase_util", "six", "future", "validators")


def result_files(task_dir: str | os.PathLike) -> list[Path]:
    """The result.yaml files s3prl wrote under `<task_dir>/evaluate/`, sorted."""
    return sorted(Path(task_dir).glob(f"evaluate/*/*/{RESULT_FILE}"))


def task_result_paths(task: str, task_dir: str | os.PathLike) -> list[Path]:
    """The result files s3prl wrote for `task` under `task_dir`: its best_result.yaml files
    when it picked the best checkpoint, else its result.yaml files (sorted; [] before the test
    stage). An unknown task is a `UserError`."""
    if task not in RESULT_KEYS:
        raise UserError(f"unknown SUPERB task '{task}'; known: {', '.join(RESULT_KEYS)}")
    return sorted(Path(task_dir).glob(f"evaluate/*/{BEST_RESULT_FILE}")) or result_files(task_dir)


def read_task_result(task: str, task_dir: str | os.PathLike) -> dict[str, float]:
    """Metrics (in %) of one finished s3prl task run: its `evaluate/<test>/best_result.yaml`
    when s3prl picked the best of several checkpoints (speaker verification does), else its
    one `evaluate/<test>/<ckpt>/result.yaml` (several of them are a `UserError`: keep only the
    one to report)."""
    files = task_result_paths(task, task_dir)
    if not files:
        raise UserError(f"{task_dir}: no evaluate/*/*/{RESULT_FILE}; run the {task} task "
                        "to its test stage first")
    if len(files) > 1:
        raise UserError(f"{task_dir}: {len(files)} results ({files[0]}, {files[1]}, ...); keep "
                        "only the test result of the checkpoint to report")
    path = files[0]
    with open(path, encoding="utf-8") as f:
        logged = yaml.safe_load(f) or {}
    metrics = {}
    for key, name in RESULT_KEYS[task].items():
        if key not in logged:
            raise UserError(f"{path}: no '{key}' (found {', '.join(map(str, logged)) or 'nothing'})"
                            f"; is this a {task} result?")
        metrics[name] = 100.0 * float(logged[key])
    return metrics


def task_result_or_none(task: str, task_dir: str | os.PathLike) -> dict[str, float] | None:
    """`read_task_result`, or None while the task has written no result (not run, or not
    at its test stage yet): what a recipe asks before (re-)running a task."""
    if not task_result_paths(task, task_dir):
        return None
    return read_task_result(task, task_dir)


def collect_results(row_dir: str | os.PathLike, tasks: list[str] | None = None
                    ) -> dict[str, float]:
    """All task metrics of one upstream: `<row_dir>/<TASK>/` for each finished task."""
    row_dir = Path(row_dir)
    found = [t for t in RESULT_KEYS if result_files(row_dir / t)] if tasks is None else tasks
    metrics: dict[str, float] = {}
    for task in found:
        metrics.update(read_task_result(task, row_dir / task))
    return metrics


def check_problems() -> None:
    """Import s3prl's problem classes (torchaudio shim first); a missing module they need is
    a `UserError` naming it. s3prl 0.4.18's `s3prl.problem` imports every task at package
    import, HEAR ones included; beside sprune's venv it needed (found one at a time) the
    packages in `EXTRA_PACKAGES`."""
    from sprune.offline import import_offline
    from sprune.upstream.s3prl_bridge import install_pandas_shim, install_torchaudio_shim

    install_torchaudio_shim()
    install_pandas_shim()
    try:
        import_offline("s3prl.problem")
    except ModuleNotFoundError as err:
        raise UserError(f"s3prl's SUPERB problem classes need the Python module '{err.name}', "
                        f"which is not installed; install: pip install "
                        f"{' '.join(EXTRA_PACKAGES)}") from None


def check_export(upstream_dir: str | os.PathLike, seconds: float = 1.0) -> dict[str, Any]:
    """Load `upstream_dir` as s3prl upstream 'sprune' and run S3PRLUpstream + Featurizer on
    random audio; returns what SUPERB sees (layers, sizes, downsample rate, output shape)."""
    import torch

    from sprune.upstream.s3prl_bridge import register

    register("sprune")
    from s3prl.nn import Featurizer, S3PRLUpstream

    upstream = S3PRLUpstream("sprune", path_or_url=os.fspath(upstream_dir)).eval()
    featurizer = Featurizer(upstream)
    samples = int(seconds * 16000)
    wavs = torch.randn(2, samples)
    lengths = torch.tensor([samples, samples // 2])
    with torch.no_grad():
        hidden, hidden_lengths = upstream(wavs, lengths)
        features, feature_lengths = featurizer(hidden, hidden_lengths)
    return {"upstream": os.fspath(upstream_dir), "num_layers": len(hidden),
            "hidden_sizes": sorted({int(h.shape[-1]) for h in hidden}),
            "downsample_rate": int(upstream.downsample_rates[0]),
            "parameters": sum(p.numel() for p in upstream.parameters()),
            "featurizer_output": list(features.shape),
            "featurizer_lengths": [int(n) for n in feature_lengths]}
