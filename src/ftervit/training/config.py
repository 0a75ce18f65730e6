"""Training configuration: one dataclass, YAML files and command-line overrides on top.

Precedence: dataclass defaults < per-phase defaults (SPEC section 3) < YAML (``-c``) <
command line. The resolved config is saved as ``config.yaml`` beside the checkpoints and
inside every checkpoint, so ``--resume`` continues with exactly the same settings.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ftervit.conversion import StudentRecipe
from ftervit.data.transforms import AUGMENT
from ftervit.errors import FtervitError
from ftervit.fileio import atomic_write_text

MODES = ("teacher", "distill")
TEACHER_PRETRAINED = "pretrained"


def _opt(default: Any, help: str, modes: tuple[str, ...] = MODES) -> Any:
    """A field whose help text and subcommands (``modes``) the CLI reads."""
    return field(default=default, metadata={"help": help, "modes": modes})


@dataclass
class TrainConfig:
    """Everything a teacher or distillation run depends on (field help doubles as CLI help)."""

    mode: str = _opt("teacher", "teacher (FP32 training) or distill (ternary student)", modes=())
    phase: int = _opt(1, "1: distill from the teacher's weights; 2: recovery from a Phase-1 checkpoint (--init)",
                      modes=("distill",))
    model: str = _opt("ftervit_digits", "timm ViT name or ftervit preset")
    data: str = _opt("digits", "digits, fashion-mnist, cifar10, cifar100, imagefolder or imagenet")
    data_dir: str | None = _opt(None, "dataset directory (Fashion-MNIST default: the Debian package's)")
    download: bool = _opt(False, "let torchvision download Fashion-MNIST/CIFAR into --data-dir (online)")
    img_size: int | None = _opt(None, "input resolution (default: the model's)")
    pretrained: bool = _opt(False, "start from timm's pretrained FP32 weights (online)", modes=("teacher",))
    init: str | None = _opt(None, "weights to start from: FP32 checkpoint (teacher) or Phase-1 checkpoint (distill)")
    teacher: str | None = _opt(None, f"FP32 teacher checkpoint, or '{TEACHER_PRETRAINED}' for timm's weights",
                               modes=("distill",))
    out: str = _opt("runs/train", "output directory: last.pth, best.pth, config.yaml, log.jsonl, curves.png")
    epochs: int | None = _opt(None, "epochs (default: teacher 100, phase 1 100, phase 2 10)")
    batch_size: int = _opt(128, "global batch size (split over DDP processes)")
    lr: float | None = _opt(None, "peak learning rate (default: teacher 5e-4, phase 1 1e-4, phase 2 1e-5)")
    min_lr: float | None = _opt(None, "final cosine learning rate (default: lr / 100)")
    warmup_epochs: float | None = _opt(None, "linear warmup epochs (default: teacher 5 or a tenth of the epochs if less, distill 0)")
    weight_decay: float = _opt(0.05, "AdamW weight decay (not on norms, biases, embeddings)")
    label_smoothing: float = _opt(0.1, "label smoothing of the cross-entropy", modes=("teacher",))
    temperature: float = _opt(1.0, "distillation temperature (KL scaled by T^2)", modes=("distill",))
    ce_weight: float = _opt(0.0, "add this times the cross-entropy with the labels to the KL (0: KL only, "
                                 "the paper's recipe)", modes=("distill",))
    quant: str = _opt("ftervit", "student quantizer: ftervit (absmean ternary, FTerViT), tervit (TerViT's "
                                 "channel-wise TWN ternary) or int8 (per-channel int8 weights)", modes=("distill",))
    scope: str = _opt("full", "what is quantized: full (everything, as FTerViT) or encoder (only qkv, proj, "
                              "fc1, fc2; patch embedding, LayerNorm and head stay FP32)", modes=("distill",))
    weight_scale: str = _opt("absmean", "ternary scale of --quant ftervit: absmean (the paper's) or absmax "
                                        "(ablation; not exportable)", modes=("distill",))
    grad_clip: float | None = _opt(None, "clip the gradient norm to this value")
    drop_path: float = _opt(0.0, "stochastic depth rate")
    augment: str = _opt("default", "default (suited to the data), flip (horizontal flips only) or none")
    re_prob: float = _opt(0.0, "random-erasing probability")
    seed: int = _opt(0, "seed of weights, data order and augmentation")
    workers: int = _opt(0, "data-loader worker processes (0: load in the main process)")
    device: str | None = _opt(None, "cpu or cuda (default: cuda when available)")
    threads: int | None = _opt(None, "CPU threads of torch (default: torch's, one per core); 1 is fastest on a busy machine")
    amp: bool = _opt(False, "bfloat16 autocast (GPUs)")
    compile: bool = _opt(False, "torch.compile the model and the teacher (GPUs, and CPUs: distillation runs "
                                "twice as fast on one core)")
    save_epochs: str | None = _opt(None, "also keep a copy of the checkpoint after these epochs as epoch_NNN.pth, "
                                         "e.g. 1,2,4 (for --init, eval and Phase-2 restarts)")
    resume: bool = _opt(False, "continue the run in --out from last.pth")
    overwrite: bool = _opt(False, "start afresh even if --out holds a run")
    quiet: bool = _opt(False, "no progress bars or per-epoch lines")

    def resolved(self) -> TrainConfig:
        """A copy with the per-phase defaults filled in; raises FtervitError if inconsistent."""
        if self.mode not in MODES:
            raise FtervitError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.phase not in (1, 2):
            raise FtervitError(f"phase must be 1 or 2, got {self.phase}")
        if self.augment not in AUGMENT:
            raise FtervitError(f"augment must be one of {', '.join(AUGMENT)}, got {self.augment!r}")
        key = "teacher" if self.mode == "teacher" else f"phase{self.phase}"
        epochs, lr, warmup = {"teacher": (100, 5e-4, 5.0), "phase1": (100, 1e-4, 0.0), "phase2": (10, 1e-5, 0.0)}[key]
        cfg = dataclasses.replace(self)
        cfg.epochs = epochs if cfg.epochs is None else cfg.epochs
        cfg.lr = lr if cfg.lr is None else cfg.lr
        cfg.min_lr = cfg.lr / 100 if cfg.min_lr is None else cfg.min_lr
        cfg.warmup_epochs = min(warmup, cfg.epochs / 10) if cfg.warmup_epochs is None else cfg.warmup_epochs
        if cfg.mode == "distill" and not cfg.teacher:
            raise FtervitError("distillation needs --teacher: the FP32 checkpoint of the same architecture "
                               f"(from `ftervit teacher`), or '{TEACHER_PRETRAINED}' for timm's weights")
        if key == "phase2" and not cfg.init:
            raise FtervitError("--phase 2 needs --init: a Phase-1 checkpoint (e.g. runs/phase1/last.pth)")
        for name in ("epochs", "batch_size", "lr", "temperature", "threads", "img_size", "grad_clip"):
            value = getattr(cfg, name)
            if value is not None and not value > 0:
                raise FtervitError(f"{name} must be positive, got {value}")
        for name in ("warmup_epochs", "min_lr", "weight_decay", "workers"):
            if not getattr(cfg, name) >= 0:
                raise FtervitError(f"{name} must be 0 or more, got {getattr(cfg, name)}")
        for name, high in (("label_smoothing", "1)"), ("drop_path", "1)"), ("re_prob", "1]")):
            value = getattr(cfg, name)
            if not (0 <= value < 1 or (high == "1]" and value == 1)):
                raise FtervitError(f"{name} must be in [0, {high}, got {value}")
        if cfg.warmup_epochs > cfg.epochs:
            raise FtervitError(f"warmup_epochs ({cfg.warmup_epochs}) exceeds epochs ({cfg.epochs})")
        if cfg.min_lr > cfg.lr:
            raise FtervitError(f"min_lr ({cfg.min_lr}) exceeds lr ({cfg.lr}): the cosine schedule decays from lr to min_lr")
        if not cfg.ce_weight >= 0:
            raise FtervitError(f"ce_weight must be 0 or more, got {cfg.ce_weight}")
        _, snapshots = cfg.recipe, cfg.snapshot_epochs  # both raise FtervitError for bad values
        bad = [e for e in snapshots if e > cfg.epochs]
        if bad:
            raise FtervitError(f"save_epochs {bad[0]} exceeds epochs ({cfg.epochs})")
        return cfg

    @property
    def recipe(self) -> StudentRecipe:
        """The student's quantization recipe (``--quant``, ``--scope``, ``--weight-scale``)."""
        return StudentRecipe(self.quant, self.scope, self.weight_scale)

    @property
    def snapshot_epochs(self) -> tuple[int, ...]:
        """The epochs of ``--save-epochs``, sorted; raises FtervitError if it is not a list of epochs."""
        if not self.save_epochs:
            return ()
        items = [t for t in self.save_epochs.replace(",", " ").split() if t]
        if not all(t.isdigit() and int(t) > 0 for t in items):
            raise FtervitError(f"save_epochs must be epoch numbers separated by commas (e.g. 1,2,4), "
                               f"got {self.save_epochs!r}")
        return tuple(sorted({int(t) for t in items}))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def field_type(name: str) -> type:
    """The value type of a TrainConfig field (``float | None`` gives float)."""
    return _TYPES[str(FIELDS[name].type).split(" |")[0]]


def normalized(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Check the keys and convert the values to the fields' types (YAML reads 1e-4 as a string)."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise FtervitError(f"{source}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(FIELDS)}")
    out = {}
    for name, value in values.items():
        kind = field_type(name)
        if kind is str and isinstance(value, (list, tuple)):  # YAML's save_epochs: [1, 2, 4]
            value = ",".join(str(v) for v in value)
        if value is None or isinstance(value, kind) or (kind is float and isinstance(value, int)):
            out[name] = value
            continue
        try:
            if kind is bool or (kind is int and isinstance(value, float) and not value.is_integer()):
                raise ValueError  # no silent 2.5 -> 2 epochs
            out[name] = kind(value)
        except ValueError:
            raise FtervitError(f"{source}: {name} must be {kind.__name__}, got {value!r}") from None
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Settings from a YAML file (keys are TrainConfig fields, dashes or underscores)."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise FtervitError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise FtervitError(f"cannot read config {path}: not a UTF-8 text file (a YAML file of settings, "
                           "e.g. 'epochs: 10')") from None
    except yaml.YAMLError as exc:  # the parser's message spans lines: keep the problem and its position
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise FtervitError(f"cannot read config {path}: invalid YAML, {problem}{where}") from exc
    if not isinstance(values, dict):
        raise FtervitError(f"config {path} must be a mapping of settings, e.g. 'epochs: 10'")
    return normalized({str(k).replace("-", "_"): v for k, v in values.items()}, str(path))


def build_config(base: dict[str, Any] | None = None, *overrides: dict[str, Any]) -> TrainConfig:
    """``TrainConfig(**base)`` updated with each mapping of overrides in turn, then resolved."""
    values = dict(base or {})
    for layer in overrides:
        values.update(normalized(layer, "config"))
    try:
        return TrainConfig(**values).resolved()
    except TypeError as exc:
        raise FtervitError(f"bad config: {exc}") from exc


def save_yaml(cfg: TrainConfig, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
