"""HuBERT-style pretraining: k-means, MFCC label alignment, span masks, the loss, the command,
and the shipped tiny pretrained upstream."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from sprune import cli
from sprune.errors import UserError
from sprune.ssl.features import FEATURE_DIM, labels_at_model_rate, mfcc_features
from sprune.ssl.hubert_pretrain import (HeadConfig, HubertPretrainModel, MaskConfig,
                                        load_pretrain_config)
from sprune.ssl.kmeans import Codebook, fit_kmeans
from sprune.ssl.labels import IGNORE_UNIT, CropCollate, collate_units, model_frames
from sprune.ssl.masking import expected_mask_fraction, span_mask
from sprune.upstream import UpstreamModel, load_upstream, tiny_config

REPO = Path(__file__).resolve().parents[1]
SHIPPED_DIR = REPO / "sprune" / "resources" / "upstream"


# -- k-means ------------------------------------------------------------------------------------
def blobs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Four well separated 3-D Gaussian blobs of 60 points: (points [240, 3], blob ids)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0],
                            [0.0, 0.0, 10.0]])
    ids = torch.arange(4).repeat_interleave(60)
    points = centres[ids] + 0.5 * torch.randn(240, 3, generator=gen)
    perm = torch.randperm(240, generator=gen)
    return points[perm], ids[perm]


def test_kmeans_recovers_separable_blobs():
    points, ids = blobs()
    codebook = fit_kmeans(points, k=4, seed=0)
    found = codebook.predict(points)
    # Each blob maps to one cluster and the four clusters are distinct.
    mapping = {int(b): set(found[ids == b].tolist()) for b in range(4)}
    assert all(len(clusters) == 1 for clusters in mapping.values())
    assert len({next(iter(c)) for c in mapping.values()}) == 4
    assert codebook.inertia < 0.1  # in standardised units; the blobs' spread is tiny


def test_kmeans_is_deterministic_and_saves(tmp_path):
    points, _ = blobs(1)
    a, b = fit_kmeans(points, k=6, seed=3), fit_kmeans(points, k=6, seed=3)
    assert torch.equal(a.centroids, b.centroids)
    a.save(tmp_path / "km.safetensors")
    loaded = Codebook.load(tmp_path / "km.safetensors")
    assert torch.equal(loaded.predict(points), a.predict(points))


def test_kmeans_needs_enough_points(tmp_path):
    with pytest.raises(UserError, match="at least k = 10"):
        fit_kmeans(torch.randn(5, 2), k=10)
    with pytest.raises(UserError, match="does not exist"):
        Codebook.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"weights": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UserError, match="not a k-means codebook"):
        Codebook.load(tmp_path / "other.safetensors")


# -- MFCC targets ------------------------------------------------------------------------------
@pytest.mark.parametrize("samples", [400, 719, 720, 1039, 16000, 16321, 23999])
def test_mfcc_labels_align_with_model_frames(samples):
    config = tiny_config("hubert")
    model = UpstreamModel(config).eval()
    wav = 0.1 * torch.randn(samples, generator=torch.Generator().manual_seed(samples))
    mfcc = mfcc_features(wav)
    assert mfcc.shape == (1 + (samples - 400) // 160, FEATURE_DIM)
    with torch.no_grad():
        frames = model(wav[None]).hidden_states[-1].shape[1]
    assert model_frames(samples, config) == frames
    mfcc_labels = torch.arange(mfcc.shape[0])  # label = MFCC frame index
    labels = labels_at_model_rate(mfcc_labels, frames, config.receptive_field,
                                  config.downsample_rate)
    # Model frame i sees samples [320 i, 320 i + 400): the MFCC window of frame 2 i.
    assert labels.tolist() == [2 * i for i in range(frames)]


def test_labels_refuse_audio_they_do_not_cover():
    with pytest.raises(ValueError, match="MFCC frame"):
        labels_at_model_rate(torch.zeros(3, dtype=torch.long), 5)


# -- span masks --------------------------------------------------------------------------------
@pytest.mark.parametrize("prob,span", [(0.08, 10), (0.05, 5), (0.2, 3)])
def test_span_mask_hits_the_configured_fraction(prob, span):
    gen = torch.Generator().manual_seed(0)
    lengths = torch.full((400,), 500)
    mask = span_mask(lengths, 500, prob, span, gen)
    # Frames far from the edges: the analytic probability 1 - (1 - p) ** span.
    interior = mask[:, span:500 - span].float().mean().item()
    assert interior == pytest.approx(expected_mask_fraction(prob, span), abs=0.01)


def test_span_mask_respects_lengths_and_masks_every_sequence():
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([3, 12, 40, 40])
    mask = span_mask(lengths, 40, 0.01, 10, gen)
    assert not mask[0, 3:].any() and mask[0, :3].all()      # shorter than a span: all masked
    assert not mask[1, 12:].any()                          # padding never masked
    assert bool(mask.any(1).all())                         # at least one span each
    again = span_mask(lengths, 40, 0.01, 10, torch.Generator().manual_seed(1))
    assert torch.equal(mask, again)


# -- the model and its loss ----------------------------------------------------------------------
def tiny_pretrain_model(num_units: int = 8) -> HubertPretrainModel:
    torch.manual_seed(0)
    upstream = UpstreamModel(tiny_config("hubert"))
    return HubertPretrainModel(upstream, num_units, MaskConfig(prob=0.1, span=4),
                               HeadConfig(final_dim=16, feature_grad_mult=1.0))


def fixed_batch(num_units: int = 8) -> dict:
    gen = torch.Generator().manual_seed(0)
    wavs = 0.1 * torch.randn(2, 6400, generator=gen)
    lengths = torch.tensor([6400, 5000])
    units = torch.randint(num_units, (2, model_frames(6400, tiny_config("hubert"))), generator=gen)
    units[1, model_frames(5000, tiny_config("hubert")):] = IGNORE_UNIT
    return {"wavs": wavs, "lengths": lengths, "units": units}


def test_pretraining_loss_decreases_on_a_fixed_batch():
    model = tiny_pretrain_model()
    batch = fixed_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        out = model.compute_loss(batch, torch.Generator().manual_seed(0))  # same masks
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["masked_ce"]))
    assert losses[-1] < 0.6 * losses[0]
    assert 0.0 < float(out["mask_fraction"]) < 1.0


def test_mask_embedding_replaces_masked_frames_only():
    model = tiny_pretrain_model().eval()
    batch = fixed_batch()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        _, mask, valid, _ = model.encode(batch["wavs"], batch["lengths"], gen)
    assert not (mask & ~valid).any()
    assert model.mask_embedding.shape == (model.upstream.config.embed_dim,)
    # The head and the mask embedding are not upstream parameters (not shipped).
    assert not any(name.startswith(("mask_embedding", "final_proj", "unit_embeddings"))
                   for name, _ in model.upstream.named_parameters())


def test_crop_collate_cuts_to_the_shortest_on_frame_boundaries():
    config = tiny_config("hubert")
    torch.manual_seed(0)
    items = []
    for n in (9000, 12000, 16000):
        wav = torch.arange(n, dtype=torch.float32)  # sample value = its index
        items.append({"wav": wav, "utt": f"u{n}",
                      "units": torch.arange(model_frames(n, config))})
    batch = CropCollate(config, max_samples=8000)(items)
    assert batch["wavs"].shape == (3, 8000) and batch["lengths"].tolist() == [8000] * 3
    frames = model_frames(8000, config)
    assert batch["units"].shape == (3, frames)
    for row in range(3):
        offset = int(batch["wavs"][row, 0])
        assert offset % config.downsample_rate == 0
        first = offset // config.downsample_rate
        assert batch["units"][row].tolist() == list(range(first, first + frames))
    padded = collate_units(items)
    assert padded["units"].shape[1] == model_frames(16000, config)
    assert (padded["units"][0] == IGNORE_UNIT).sum() > 0


# -- config and command ----------------------------------------------------------------------
def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(UserError, match="unknown key 'colour'"):
        load_pretrain_config(str(write_yaml(tmp_path / "a.yaml", "model:\n  colour: red\n")))
    with pytest.raises(UserError, match="units.k"):
        load_pretrain_config(None, ["units.k=1"])
    with pytest.raises(UserError, match="num_heads"):
        load_pretrain_config(None, ["model.num_heads=5"])
    with pytest.raises(UserError, match="crop_seconds"):
        load_pretrain_config(None, ["crop_seconds=0.01"])
    with pytest.raises(UserError, match="mask.prob"):
        load_pretrain_config(None, ["mask.prob=1.5"])
    config = load_pretrain_config(None, ["train.max_steps=7"])
    assert config.train.max_steps == 7 and config.train.metric == "masked_acc"


TINY = ["--set", "model.conv_channels=16", "--set", "model.embed_dim=32",
        "--set", "model.num_layers=2", "--set", "model.ffn_dim=64",
        "--set", "model.pos_conv_kernel=8", "--set", "model.pos_conv_groups=4",
        "--set", "units.k=4", "--set", "units.max_frames=500", "--set", "head.final_dim=8",
        "--set", "train.max_steps=3", "--set", "train.batch_size=2",
        "--set", "train.eval_every=2", "--set", "train.log_every=1", "--set", "eval_max_utts=2"]


def test_pretrain_command_end_to_end(tmp_path, make_data_dir, capsys):
    train = make_data_dir(tmp_path, n_utts=6, seconds=(0.5, 0.7), name="train")
    dev = make_data_dir(tmp_path, n_utts=3, seconds=0.6, name="dev")
    out = tmp_path / "exp"
    args = ["pretrain", "--train", str(train), "--dev", str(dev), "--out", str(out), *TINY]
    assert cli.main(args) == 0
    model, config = load_upstream(str(out / "upstream"))
    assert config.family == "hubert" and config.embed_dim == 32 and config.num_layers == 2
    assert not any("mask_embedding" in name for name, _ in model.named_parameters())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"masked_acc", "masked_ce"} <= set(log[-1]) and log[-1]["event"] == "eval"
    assert Codebook.load(out / "kmeans.safetensors").k == 4
    # Finished: a rerun does nothing; another config in the same folder is refused.
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert cli.main(args + ["--set", "mask.span=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another config" in err
    # A codebook left behind with another k is refused, not silently reused.
    (out / "pretrain.json").unlink()
    shutil.rmtree(out / "upstream")
    assert cli.main(args + ["--set", "units.k=3"]) == 2
    assert "has 4 clusters but units.k is 3" in capsys.readouterr().err


def test_pretrain_command_rejects_bad_input(tmp_path, make_data_dir, capsys):
    dev = make_data_dir(tmp_path, n_utts=3, name="dev")
    assert cli.main(["pretrain", "--train", str(tmp_path / "nope"), "--dev", str(dev),
                     "--out", str(tmp_path / "exp")]) == 2
    assert "nope" in capsys.readouterr().err
    bad = write_yaml(tmp_path / "bad.yaml", "train:\n  lr: fast\n")
    assert cli.main(["pretrain", "--config", str(bad), "--train", str(dev), "--dev", str(dev),
                     "--out", str(tmp_path / "exp")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.lr" in err
    assert not (tmp_path / "exp").exists()
    assert cli.main(["pretrain", "--train", str(dev), "--dev", str(dev), "--out",
                     str(tmp_path / "exp"), "--threads", "-1"]) == 2
    assert "--threads -1" in capsys.readouterr().err


# -- the shipped tiny pretrained upstream ------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny_hubert_en", "tiny_hubert_all"])
def test_shipped_tiny_upstream_loads_and_matches_its_readme(name):
    shipped = SHIPPED_DIR / name
    weights = shipped / "model.safetensors"
    assert weights.is_file(), "run egs/mini_minds/ssl1/run.sh and ship its upstream"
    size = sum(f.stat().st_size for f in shipped.iterdir() if f.is_file())
    assert size <= 10 * 1024 * 1024
    model, config = load_upstream(str(shipped))
    readme = (shipped / "README.md").read_text()
    stated = re.search(r"Parameters: ([\d,]+)", readme)
    assert stated is not None, "the README must state 'Parameters: N'"
    assert model.num_parameters() == int(stated.group(1).replace(",", ""))
    assert config.receptive_field == 400 and config.downsample_rate == 320
    assert (shipped / "train_log.jsonl").is_file()
    with torch.no_grad():
        out = model(0.1 * torch.randn(1, 16000))
    assert len(out.hidden_states) == config.num_layers + 1
    assert all(torch.isfinite(h).all() for h in out.hidden_states)


# -- the ssl1 recipe -------------------------------------------------------------------------
RECIPE = REPO / "egs" / "mini_minds" / "ssl1"
TINY_YAML = """\
model: {conv_channels: 16, embed_dim: 32, num_layers: 2, num_heads: 4, ffn_dim: 64,
        pos_conv_kernel: 8, pos_conv_groups: 4}
units: {k: 4, max_frames: 500}
head: {final_dim: 8}
eval_max_utts: 2
train: {max_steps: 2, batch_size: 2, eval_every: 2, log_every: 1}
"""


def copy_recipe(tmp_path: Path) -> Path:
    """The ssl1 recipe's run.sh in a scratch folder, with utils/ and a tiny config."""
    recipe = tmp_path / "ssl1"
    (recipe / "conf").mkdir(parents=True)
    (recipe / "run.sh").write_text((RECIPE / "run.sh").read_text())
    (recipe / "run.sh").chmod(0o755)
    (recipe / "path.sh").symlink_to(RECIPE / "path.sh")
    (recipe / "utils").symlink_to(REPO / "utils")
    (recipe / "conf" / "tiny.yaml").write_text(TINY_YAML)
    return recipe


def run_recipe(recipe: Path, env: dict, *args: str):
    import subprocess

    return subprocess.run(["./run.sh", *args], cwd=recipe, env=env, capture_output=True,
                          text=True, timeout=300)


def test_ssl1_recipe_options(tmp_path, sprune_on_path):
    env = {**sprune_on_path, "SPRUNE_VENV": str(tmp_path / "no-venv")}
    recipe = copy_recipe(tmp_path)
    done = run_recipe(recipe, env, "--help")
    assert done.returncode == 0 and "--pretrain-config FILE" in done.stdout
    bad = run_recipe(recipe, env, "--colour", "red")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_ssl1_recipe_pretrains_and_probes(tmp_path, make_data_dir, sprune_on_path):
    """Stages 2-3 on a tiny data dir."""
    env = {**sprune_on_path, "SPRUNE_VENV": str(tmp_path / "no-venv")}
    recipe = copy_recipe(tmp_path)
    for split, n in (("train", 8), ("dev", 5), ("test", 5)):
        make_data_dir(recipe / "data" / "en-US", n_utts=n, seconds=(0.5, 0.6), name=split)
    args = ("--stage", "2", "--langs", "en-US", "--pretrain-config", "conf/tiny.yaml")
    done = run_recipe(recipe, env, *args)
    assert done.returncode == 0, done.stderr
    exp = recipe / "exp" / "tiny_en-US"
    load_upstream(str(exp / "upstream"))
    results = (exp / "RESULTS.md").read_text()
    assert "| pretrained |" in results and "| random (seed 0) |" in results
    again = run_recipe(recipe, env, *args)
    assert again.returncode == 0
    assert "stage 2: exp/tiny_en-US/upstream exists; skipping" in again.stdout
    assert "stage 3: exp/tiny_en-US/RESULTS.md exists; skipping" in again.stdout
