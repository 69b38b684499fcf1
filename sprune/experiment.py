"""Task experiments: build the task model, its data and its evaluation from a recipe config,
and hand them to a pruning method (`sprune prune`), to evaluation (`sprune evaluate`).

The recipe config's `task:` picks the experiment class from `TASKS`:

    intent   `IntentExperiment`  spoken intent classification (paper 000), `head:` section
    ctc      `CTCExperiment`     CTC speech recognition (paper 001), `ctc:` section
    transducer `TransducerExperiment` RNN-T speech recognition (paper 002's ASR model),
                                 `transducer:` section

An experiment folder (`exp/<tag>/<run>`) holds `experiment.json`, so it can be evaluated and
analysed later without the recipe:

    config        the resolved task config
    upstream      the upstream spec
    data          {"train", "dev": the data dirs, "train_langs": utt2lang tags of the
                  training set, sorted; [] without utt2lang}; `sprune analyze` tells
                  languages apart by `train_langs`
    mask_source   only for a run that took its mask from another run (`mask_from`): that
                  run's folder, method, sparsity and train_langs
    intents       (intent) the label vocabulary, in class-index order
    tokenizer     (ctc) the tokenizer file in the run folder (built from the training text
                  unless `ctc.tokenizer` names one), and its vocab_size
    bpe           (transducer) the BPE model in the run folder (a copy of `transducer.bpe`,
                  the LM's, or trained on the training text), and its vocab_size
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Literal, Sequence

import torch
from torch import nn

from sprune.config import apply_overrides, from_dict, load_yaml
from sprune.data.datadir import DataDir
from sprune.data.dataset import AudioDataset, collate_audio
from sprune.errors import UserError
from sprune.io import atomic_write_text
from sprune.prune.methods import PruneContext
from sprune.tasks.ctc import CTCCollate, CTCConfig, CTCModel, error_rates, evaluate_ctc
from sprune.tasks.ctc_decode import check_decoding_options
from sprune.tasks.intent import IntentClassifier, IntentHeadConfig, evaluate_intents
from sprune.tasks.transducer import TransducerConfig, TransducerModel, decode_transducer
from sprune.training import EpochBatchSampler, TrainConfig, Trainer, move_to_device, resolve_device

EXPERIMENT_FILE = "experiment.json"


@dataclass
class ExperimentConfig:
    """An intent recipe's `conf/finetune.yaml`: the task, its head and the fine-tuning settings."""

    task: Literal["intent"] = "intent"
    upstream: str | None = None          # upstream spec (a path); `--upstream` overrides it
    freeze_feature_encoder: bool = True  # paper 000: the conv feature encoder stays frozen
    # also the feature projection and positional conv: only the transformer layers train
    freeze_front_end: bool = False
    head: IntentHeadConfig = field(default_factory=IntentHeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preload_audio: bool = True           # read all audio once (small corpora)
    eval_batch_size: int = 16
    feature_cache: str | None = None     # dir: frozen features computed once (feature_cache.py)


IntentExperimentConfig = ExperimentConfig


@dataclass
class CTCExperimentConfig:
    """A CTC recipe's `conf/finetune.yaml`. `train.metric` defaults to the units' error rate
    (per for phones, else wer) with `metric_mode: min`."""

    task: Literal["ctc"] = "ctc"
    upstream: str | None = None
    freeze_feature_encoder: bool = True  # paper 001 (wav2vec 2.0 fine-tuning): frozen conv encoder
    freeze_front_end: bool = False
    ctc: CTCConfig = field(default_factory=CTCConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preload_audio: bool = True
    eval_batch_size: int = 16
    feature_cache: str | None = None


@dataclass
class TransducerExperimentConfig:
    """A transducer recipe's `conf/finetune.yaml`. `train.metric` defaults to wer (min)."""

    task: Literal["transducer"] = "transducer"
    upstream: str | None = None
    freeze_feature_encoder: bool = True
    freeze_front_end: bool = False
    transducer: TransducerConfig = field(default_factory=TransducerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preload_audio: bool = True
    eval_batch_size: int = 16
    feature_cache: str | None = None


def train_languages(data: DataDir) -> list[str]:
    """The utt2lang tags of a data dir, sorted ([] without utt2lang)."""
    return sorted(set(data.utt2lang.values())) if data.utt2lang is not None else []


def transcripts_name(ctc: CTCConfig) -> str:
    """The data-dir file a CTC experiment reads transcripts from: text.phones for phones."""
    from sprune.data.phonemize import PHONES_FILE

    return PHONES_FILE if ctc.units == "phone" else "text"


def _read_document(folder: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    path = Path(folder) / EXPERIMENT_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing; give a folder written by `sprune prune`")
    from sprune.io import read_json_object

    return path, read_json_object(path)


class Experiment:
    """What every task shares: the upstream, parameter groups, the trainer factory, the
    pruning context and the experiment.json round trip. Subclasses add the task."""

    task: ClassVar[str] = ""
    config_class: ClassVar[type] = ExperimentConfig

    def __init__(self, config: Any, upstream_spec: str) -> None:
        from sprune.upstream import load_upstream

        self.config = config
        self.upstream_spec = upstream_spec
        self._upstream, self.upstream_config = load_upstream(
            upstream_spec, freeze_feature_encoder=config.freeze_feature_encoder)
        self._upstream.freeze_front_end(config.freeze_front_end)
        self._attach_feature_cache(config)
        self.train_set: AudioDataset | None = None
        self.dev_set: AudioDataset | None = None
        self.metadata: dict[str, Any] = {}    # "data", "mask_source" (see the module docstring)
        self.init_from: Path | None = None    # a finished run whose final weights start training
        self._dev_by_language: dict[str, AudioDataset] = {}   # evaluate_language's subsets

    def _attach_feature_cache(self, config: Any) -> None:
        """`feature_cache: DIR`: what the frozen conv encoder (and a frozen front end)
        computes for each utterance is computed once and kept in DIR
        (`sprune.upstream.feature_cache`), shared by every run of a recipe and by later
        evaluations. The path is made absolute (experiment.json keeps it, so `sprune
        evaluate` finds it from anywhere)."""
        if not config.feature_cache:
            return
        if not config.freeze_feature_encoder:
            raise UserError(f"feature_cache: {config.feature_cache} needs "
                            "freeze_feature_encoder: true (a trained encoder's features change "
                            "at every update); set it, or remove feature_cache")
        import atexit

        from sprune.upstream.feature_cache import FeatureCache

        config.feature_cache = os.path.abspath(config.feature_cache)
        cache = FeatureCache(config.feature_cache)
        atexit.register(cache.flush)
        self._upstream.set_feature_cache(cache)

    # -- task-specific (subclasses) ----------------------------------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, dataset: AudioDataset | None = None) -> dict[str, float]:
        raise NotImplementedError

    def dataset(self, data_dir: str | os.PathLike) -> AudioDataset:
        raise NotImplementedError

    def collate(self) -> Callable:
        return collate_audio

    def _task_document(self, folder: Path) -> dict[str, Any]:
        """Task entries of experiment.json (files it names are written into `folder`)."""
        return {}

    @classmethod
    def _from_document(cls, config: Any, doc: dict[str, Any], folder: Path) -> "Experiment":
        raise NotImplementedError

    @classmethod
    def config_defaults(cls, data: dict[str, Any]) -> None:
        """Fill task-dependent defaults into a raw config mapping before it is checked."""

    # -- shared ------------------------------------------------------------------------------
    def _set_data(self, train_dir: str | os.PathLike, dev_dir: str | os.PathLike,
                  train: DataDir) -> None:
        self.metadata["data"] = {"train": str(train_dir), "dev": str(dev_dir),
                                 "train_langs": train_languages(train)}

    def groups(self) -> dict[str, list[str]]:
        return {name: [f"upstream.{p}" for p in params]
                for name, params in self._upstream.parameter_groups().items()}

    def make_trainer(self, model: nn.Module, out_dir: Path, callbacks, config: TrainConfig
                     ) -> Trainer:
        if self.train_set is None:
            raise RuntimeError("this experiment was loaded for evaluation only")
        return Trainer(model, self.train_set, self.collate(), config, out_dir,
                       evaluate=self.evaluate, callbacks=callbacks)

    def scoring_batches(self, n: int, language: str | None = None) -> Iterator[Any]:
        """`n` collated training batches on the training device, for the data-driven pruning
        criteria: always the same ones, in the same order (an `EpochBatchSampler` of its own
        with `train.seed`, epochs 0, 1, ... as needed), length-bucketed like training. The
        trainer's sampler, position and RNG are not touched (nothing here draws from the
        global generators), so a resumed run scores on the same batches. `language`: from
        the training utterances of that language (utt2lang) only."""
        if self.train_set is None:
            raise RuntimeError("this experiment was loaded for evaluation only")
        dataset = self.train_set
        if language is not None:
            tags = dataset.languages() or []
            dataset = dataset.subset([u for u, t in zip(dataset.utts, tags) if t == language])
        if len(dataset) == 0:
            return
        train = self.config.train
        lengths = dataset.lengths() if train.bucket_by_length else None
        sampler = EpochBatchSampler(len(dataset), train.batch_size, train.seed,
                                    lengths=lengths)
        device = resolve_device(train.device)
        collate = self.collate()
        epoch, given = 0, 0
        while given < n:
            sampler.set_position(epoch)
            for indices in sampler:
                if given == n:
                    return
                yield move_to_device(collate([dataset[i] for i in indices]), device)
                given += 1
            epoch += 1

    def initial_model(self) -> nn.Module:
        """`build_model()`, with the final weights of `init_from` when set (`sprune prune
        --init-from`: prune a fine-tuned model, e.g. a dense multilingual one; the methods
        then rewind to these weights instead of the pretrained upstream's)."""
        from sprune.prune.methods.base import load_model_state

        model = self.build_model()
        if self.init_from is not None:
            load_model_state(model, self.init_from / "final")
        return model

    def context(self, dense_dir: Path | None, resume: bool = True) -> PruneContext:
        return PruneContext(build_model=self.initial_model, groups=self.groups(),
                            train_config=self.config.train, make_trainer=self.make_trainer,
                            evaluate=self.evaluate, dense_dir=dense_dir, resume=resume,
                            log=lambda msg: print(msg, flush=True),
                            train_batches=(self.scoring_batches
                                           if self.train_set is not None else None),
                            language_batches=(
                                (lambda language, n: self.scoring_batches(n, language))
                                if self.train_set is not None else None),
                            languages=self.metadata.get("data", {}).get("train_langs", []),
                            evaluate_language=(self.evaluate_language
                                               if self.dev_set is not None else None))

    def evaluate_language(self, model: nn.Module, language: str) -> dict[str, float]:
        """Metrics on the dev utterances tagged `language` (utt2lang) only."""
        subsets = self._dev_by_language
        if language not in subsets:
            tags = self.dev_set.languages() or []
            utts = [u for u, tag in zip(self.dev_set.utts, tags) if tag == language]
            if not utts:
                raise UserError(f"{self.dev_set.data.path}: no dev utterance of language "
                                f"'{language}' (utt2lang); every trained language needs dev "
                                "data")
            subsets[language] = self.dev_set.subset(utts)
        return self.evaluate(model, subsets[language])

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        # a local path is kept absolute: the run is evaluated later from anywhere
        spec = self.upstream_spec
        upstream = os.path.abspath(spec) if os.path.exists(spec) else spec
        doc = {"config": asdict(self.config), "upstream": upstream,
               **self._task_document(folder), **self.metadata}
        atomic_write_text(folder / EXPERIMENT_FILE, json.dumps(doc, indent=1) + "\n")

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "Experiment":
        """Reload the experiment of a run folder for evaluation (no training data).

        Called on `Experiment`, it dispatches on the saved `task`; on a subclass, the saved
        task must be that subclass's."""
        path, doc = _read_document(folder)
        raw = doc.get("config")
        if not isinstance(raw, dict):
            raise UserError(f"{path}: no 'config' mapping; rewrite it with `sprune prune`")
        task = raw.get("task", "intent")
        if task not in TASKS:
            raise UserError(f"{path}: unknown task '{task}'; known: {', '.join(TASKS)}")
        target = TASKS[task]
        if cls is not Experiment and target is not cls:
            raise UserError(f"{path}: the run is a '{task}' experiment, not '{cls.task}'")
        config = from_dict(target.config_class, raw, str(path))
        experiment = target._from_document(config, doc, Path(folder))
        experiment.metadata = {k: doc[k] for k in ("data", "mask_source", "init_from") if k in doc}
        return experiment


class IntentExperiment(Experiment):
    """The intent task of a recipe: model factory, datasets, evaluation, trainer factory."""

    task = "intent"
    config_class = ExperimentConfig

    def __init__(self, config: ExperimentConfig, upstream_spec: str, intents: Sequence[str],
                 dev: DataDir | None = None, train: DataDir | None = None) -> None:
        super().__init__(config, upstream_spec)
        self.intents = list(intents)
        self.train_set = (AudioDataset(train, self.intents, preload=config.preload_audio)
                          if train is not None else None)
        self.dev_set = (AudioDataset(dev, self.intents, preload=config.preload_audio)
                        if dev is not None else None)

    @classmethod
    def for_training(cls, config: ExperimentConfig, upstream_spec: str, train_dir: str,
                     dev_dir: str) -> "IntentExperiment":
        train = DataDir.load(train_dir)
        if len(train) == 0:
            raise UserError(f"{train_dir}: the training set is empty")
        if train.utt2intent is None:
            raise UserError(f"{train_dir}/utt2intent is missing; the intent task needs it")
        intents = sorted(set(train.utt2intent.values()))
        experiment = cls(config, upstream_spec, intents, dev=DataDir.load(dev_dir), train=train)
        experiment._set_data(train_dir, dev_dir, train)
        return experiment

    @classmethod
    def _from_document(cls, config: ExperimentConfig, doc: dict[str, Any], folder: Path
                       ) -> "IntentExperiment":
        return cls(config, doc["upstream"], doc["intents"])

    def _task_document(self, folder: Path) -> dict[str, Any]:
        return {"intents": self.intents}

    def build_model(self) -> nn.Module:
        """Pretrained upstream + a head initialised from the training seed (identical on every
        call, as rewinding and the methods' comparisons need)."""
        torch.manual_seed(self.config.train.seed)
        return IntentClassifier(copy.deepcopy(self._upstream), self.upstream_config.embed_dim,
                                len(self.intents), self.config.head)

    def evaluate(self, model: nn.Module, dataset: AudioDataset | None = None) -> dict[str, float]:
        return evaluate_intents(model, dataset or self.dev_set, self.config.eval_batch_size)

    def dataset(self, data_dir: str | os.PathLike) -> AudioDataset:
        return AudioDataset(DataDir.load(data_dir), self.intents,
                            preload=self.config.preload_audio)


class CTCExperiment(Experiment):
    """CTC ASR (paper 001): tokenizer from the training text (or `ctc.tokenizer`), linear
    CTC head, decoding and WER / CER / PER. Phone units read `text.phones`
    (`sprune phonemize`) instead of `text`."""

    task = "ctc"
    config_class = CTCExperimentConfig

    def __init__(self, config: CTCExperimentConfig, upstream_spec: str, tokenizer,
                 dev: DataDir | None = None, train: DataDir | None = None) -> None:
        self._check_metric(config)
        check_decoding_options(config.ctc.decoder, config.ctc.kenlm, config.ctc.lm_weight,
                               config.ctc.beam_tokens)
        super().__init__(config, upstream_spec)
        self.tokenizer = tokenizer
        preload = config.preload_audio
        self.train_set = AudioDataset(train, preload=preload) if train is not None else None
        self.dev_set = AudioDataset(dev, preload=preload) if dev is not None else None
        self.train_source = (str(Path(train.path or ".") / transcripts_name(config.ctc))
                             if train is not None else None)

    # -- config ------------------------------------------------------------------------------
    @classmethod
    def config_defaults(cls, data: dict[str, Any]) -> None:
        ctc, train = data.get("ctc", {}), data.setdefault("train", {})
        if not isinstance(ctc, dict) or not isinstance(train, dict):
            return   # from_dict reports the wrong type
        train.setdefault("metric", CTCConfig(units=ctc.get("units", "char")).primary_metric())
        train.setdefault("metric_mode", "min")

    @staticmethod
    def _check_metric(config: CTCExperimentConfig) -> None:
        CTCExperiment._check_metric_of(config, config.ctc.metrics(),
                                       f"ctc units '{config.ctc.units}'")

    @staticmethod
    def _check_metric_of(config: Any, metrics: Sequence[str], what: str) -> None:
        """train.metric must be one of `metrics` (what `what` reports), minimised."""
        if config.train.metric not in metrics:
            raise UserError(f"train.metric '{config.train.metric}' is not reported for "
                            f"{what} (they give {', '.join(metrics)}); set train.metric to "
                            "one of them")
        if config.train.metric_mode != "min":
            raise UserError(f"train.metric_mode is '{config.train.metric_mode}' but "
                            f"'{config.train.metric}' is an error rate; set metric_mode: min")

    # -- data --------------------------------------------------------------------------------
    @staticmethod
    def load_data(data_dir: str | os.PathLike, ctc: CTCConfig | None) -> DataDir:
        """A data dir with its transcripts (phones for phone units) as `text`."""
        from sprune.data.phonemize import with_phone_transcripts

        data = DataDir.load(data_dir)
        if data.text is None:
            raise UserError(f"{data_dir}/text is missing; speech recognition needs transcripts")
        return with_phone_transcripts(data) if ctc is not None and ctc.units == "phone" else data

    @staticmethod
    def make_tokenizer(ctc: CTCConfig, train: DataDir, transcripts: str):
        from sprune.data.tokenizer import build_tokenizer, check_transcripts, load_tokenizer

        if ctc.tokenizer:
            tokenizer = load_tokenizer(ctc.tokenizer)
            if tokenizer.kind != ctc.units:
                raise UserError(f"ctc.tokenizer {ctc.tokenizer} holds {tokenizer.kind} units but "
                                f"ctc.units is '{ctc.units}'; make them agree")
        else:
            tokenizer = build_tokenizer(ctc.units, (train.text or {}).values(),
                                        vocab_size=ctc.vocab_size,
                                        word_boundary=ctc.word_boundary)
        # every training transcript must encode (a given tokenizer may lack symbols; any
        # tokenizer may leave a transcript empty): the first bad line is named
        check_transcripts(tokenizer, transcripts)
        return tokenizer

    @classmethod
    def for_training(cls, config: CTCExperimentConfig, upstream_spec: str, train_dir: str,
                     dev_dir: str) -> "CTCExperiment":
        cls._check_metric(config)
        train = cls.load_data(train_dir, config.ctc)
        if len(train) == 0:
            raise UserError(f"{train_dir}: the training set is empty")
        dev = cls.load_data(dev_dir, config.ctc)
        if len(dev) == 0:
            raise UserError(f"{dev_dir}: no utterances to decode (an empty decoding set)")
        tokenizer = cls.make_tokenizer(config.ctc, train,
                                       str(Path(train_dir) / transcripts_name(config.ctc)))
        experiment = cls(config, upstream_spec, tokenizer, dev=dev, train=train)
        experiment._set_data(train_dir, dev_dir, train)
        return experiment

    def dataset(self, data_dir: str | os.PathLike) -> AudioDataset:
        return AudioDataset(self.load_data(data_dir, self.config.ctc), preload=False)

    def collate(self) -> Callable:
        return CTCCollate(self.tokenizer, source=self.train_source)

    # -- experiment.json ---------------------------------------------------------------------
    def tokenizer_file(self) -> str:
        return "tokenizer.model" if self.tokenizer.kind == "bpe" else "tokenizer.json"

    def _task_document(self, folder: Path) -> dict[str, Any]:
        self.tokenizer.save(folder / self.tokenizer_file())
        return {"tokenizer": self.tokenizer_file(), "vocab_size": self.tokenizer.vocab_size}

    @classmethod
    def _from_document(cls, config: CTCExperimentConfig, doc: dict[str, Any], folder: Path
                       ) -> "CTCExperiment":
        from sprune.data.tokenizer import load_tokenizer

        if "tokenizer" not in doc:
            raise UserError(f"{folder / EXPERIMENT_FILE}: no 'tokenizer' entry; run "
                            "`sprune prune` for this folder again")
        return cls(config, doc["upstream"], load_tokenizer(folder / doc["tokenizer"]))

    # -- model and evaluation ----------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """Pretrained upstream + a linear CTC head initialised from the training seed."""
        torch.manual_seed(self.config.train.seed)
        c = self.config.ctc
        return CTCModel(copy.deepcopy(self._upstream), self.upstream_config.embed_dim,
                        self.tokenizer.vocab_size, layer=c.layer, dropout=c.dropout,
                        head_lr_scale=c.head_lr_scale, time_mask_prob=c.time_mask_prob,
                        time_mask_span=c.time_mask_span)

    def evaluate(self, model: nn.Module, dataset: AudioDataset | None = None) -> dict[str, float]:
        c = self.config.ctc
        return evaluate_ctc(model, dataset or self.dev_set, self.tokenizer, c.decoder, c.beam,
                            c.beam_prune, batch_size=self.config.eval_batch_size,
                            kenlm=c.kenlm, lm_weight=c.lm_weight, beam_tokens=c.beam_tokens)


class TransducerExperiment(Experiment):
    """Transducer ASR: BPE units shared with the LM (`transducer.bpe`, an `LMVocab`), ESPnet's
    prediction and joint networks, RNN-T loss; dev decoding with sprune's search
    (`transducer.beam`, no LM) scored as WER / CER."""

    task = "transducer"
    config_class = TransducerExperimentConfig
    BPE_FILE = "bpe.model"

    def __init__(self, config: TransducerExperimentConfig, upstream_spec: str, vocab,
                 dev: DataDir | None = None, train: DataDir | None = None) -> None:
        CTCExperiment._check_metric_of(config, ("wer", "cer"), "transducer")
        super().__init__(config, upstream_spec)
        self.vocab = vocab
        preload = config.preload_audio
        self.train_set = AudioDataset(train, preload=preload) if train is not None else None
        self.dev_set = AudioDataset(dev, preload=preload) if dev is not None else None
        self.train_source = str(Path(train.path or ".") / "text") if train is not None else None

    @classmethod
    def config_defaults(cls, data: dict[str, Any]) -> None:
        train = data.setdefault("train", {})
        if isinstance(train, dict):
            train.setdefault("metric", "wer")
            train.setdefault("metric_mode", "min")

    @staticmethod
    def make_vocab(config: TransducerConfig, train: DataDir, transcripts: str):
        """The LM's BPE model (`bpe`), or one trained on the training transcripts; every
        training transcript must encode with it (the first that does not is named)."""
        from sprune.data.tokenizer import check_transcripts
        from sprune.lm.vocab import LMVocab

        if config.bpe:
            vocab = LMVocab.load(config.bpe)
        else:
            vocab = LMVocab.train((train.text or {}).values(), config.vocab_size)
        check_transcripts(vocab.tokenizer, transcripts)
        return vocab

    @classmethod
    def for_training(cls, config: TransducerExperimentConfig, upstream_spec: str,
                     train_dir: str, dev_dir: str) -> "TransducerExperiment":
        CTCExperiment._check_metric_of(config, ("wer", "cer"), "transducer")
        train = CTCExperiment.load_data(train_dir, None)
        if len(train) == 0:
            raise UserError(f"{train_dir}: the training set is empty")
        dev = CTCExperiment.load_data(dev_dir, None)
        if len(dev) == 0:
            raise UserError(f"{dev_dir}: no utterances to decode (an empty decoding set)")
        vocab = cls.make_vocab(config.transducer, train, str(Path(train_dir) / "text"))
        experiment = cls(config, upstream_spec, vocab, dev=dev, train=train)
        experiment._set_data(train_dir, dev_dir, train)
        return experiment

    def dataset(self, data_dir: str | os.PathLike) -> AudioDataset:
        return AudioDataset(CTCExperiment.load_data(data_dir, None), preload=False)

    def collate(self) -> Callable:
        return CTCCollate(self.vocab.tokenizer, source=self.train_source)

    def _task_document(self, folder: Path) -> dict[str, Any]:
        self.vocab.tokenizer.save(folder / self.BPE_FILE)
        return {"bpe": self.BPE_FILE, "vocab_size": self.vocab.vocab_size}

    @classmethod
    def _from_document(cls, config: TransducerExperimentConfig, doc: dict[str, Any],
                       folder: Path) -> "TransducerExperiment":
        from sprune.lm.vocab import LMVocab

        if "bpe" not in doc:
            raise UserError(f"{folder / EXPERIMENT_FILE}: no 'bpe' entry; run `sprune prune` "
                            "for this folder again")
        return cls(config, doc["upstream"], LMVocab.load(folder / doc["bpe"]))

    def build_model(self) -> nn.Module:
        """Pretrained upstream + ESPnet decoder and joint network from the training seed."""
        torch.manual_seed(self.config.train.seed)
        return TransducerModel(copy.deepcopy(self._upstream), self.upstream_config.embed_dim,
                               self.vocab.vocab_size, self.config.transducer)

    def evaluate(self, model: nn.Module, dataset: AudioDataset | None = None) -> dict[str, float]:
        """sprune's search at `transducer.beam`, no LM (`sprune decode` fuses LMs)."""
        from sprune.decode.transducer_search import TransducerSearch

        search = TransducerSearch(model.decoder, model.joint, self.config.transducer.beam)
        decoded = decode_transducer(model, dataset or self.dev_set, self.vocab, search,
                                    self.config.eval_batch_size)
        return error_rates(decoded, self.vocab.tokenizer)


TASKS: dict[str, type[Experiment]] = {"intent": IntentExperiment, "ctc": CTCExperiment,
                                      "transducer": TransducerExperiment}


def load_experiment_config(path: str | None, overrides: Sequence[str] = ()) -> Any:
    """The task config of a recipe: `task:` (default intent) picks the config class."""
    data = load_yaml(path) if path is not None else {}
    where = str(path) if path is not None else "config"
    apply_overrides(data, overrides, where)
    task = data.get("task", "intent")
    if task not in TASKS:
        raise UserError(f"{where}: task: {task!r} is not one of "
                        f"{', '.join(map(repr, TASKS))}")
    cls = TASKS[task]
    cls.config_defaults(data)
    return from_dict(cls.config_class, data, where)


def experiment_for_training(config: Any, upstream_spec: str, train_dir: str, dev_dir: str
                            ) -> Experiment:
    """The experiment of `config.task`, with its training and dev data loaded."""
    return TASKS[config.task].for_training(config, upstream_spec, train_dir, dev_dir)


def load_experiment(folder: str | os.PathLike) -> Experiment:
    """The experiment saved in a run folder (any task), for evaluation."""
    return Experiment.from_folder(folder)


def ctc_run_tokenizer(folder: str | os.PathLike, why: str):
    """The tokenizer of a CTC run folder; a folder that is no run, or a run of another task,
    is a one-line `UserError` (`why`: what needs a CTC run's units)."""
    folder = Path(folder)
    if not (folder / EXPERIMENT_FILE).is_file():
        raise UserError(f"{folder} is not a run folder (no {EXPERIMENT_FILE}); give a CTC run "
                        "written by `sprune prune`")
    experiment = load_experiment(folder)
    if experiment.task != "ctc":
        raise UserError(f"{folder} is a '{experiment.task}' run; {why}")
    return experiment.tokenizer
