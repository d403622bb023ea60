"""The training loop: AdamW, linear warm-up then cosine decay, gradient clipping, optionally
a moving average of the weights (judged and kept in their place), early stopping on the
validation loss, mixed precision where the hardware has it, a checkpoint after
every epoch (a killed training resumes from its last finished epoch and ends as an
uninterrupted one would), and data-parallel training when started under ``torchrun``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hydraopt.atomic import atomic_path
from hydraopt_plugins.surrogates import HeadSettings, HydraBertSettings
from hydraopt_plugins.surrogates.hydrabert.losses import (
    TaskWeighting,
    head_loss,
    recalibrated_log_loss,
)
from hydraopt_plugins.surrogates.hydrabert.weight_average import WeightAverage

CHECKPOINT = "checkpoint.pt"
TORCH_SEED_RANGE = 2**32  # seeds beyond it overflow torch's per-epoch generator seeds


@dataclass
class Rows:
    """Scaled training rows as tensors on the training device."""

    features: torch.Tensor  # [n, F] float32
    polymer: torch.Tensor  # [n] long, into the polymer list
    category: torch.Tensor  # [n] long
    targets: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.polymer)

    def to(self, device: torch.device) -> Rows:
        return Rows(
            self.features.to(device),
            self.polymer.to(device),
            self.category.to(device),
            {k: v.to(device) for k, v in self.targets.items()},
            {k: v.to(device) for k, v in self.valid.items()},
        )


class PolymerEmbedding(nn.Module):
    """The batch's polymers' embeddings: from the trainable encoder, or looked up in the
    frozen table (computed once per unique PSMILES)."""

    def __init__(
        self, psmiles: list[str], frozen: torch.Tensor | None, encoder: nn.Module | None
    ) -> None:
        super().__init__()
        self.psmiles = psmiles
        self.encoder = encoder
        self.register_buffer("frozen", frozen if frozen is not None else torch.zeros(0))

    def forward(self, polymers: torch.Tensor) -> torch.Tensor:
        if self.encoder is not None:
            return self.encoder([self.psmiles[i] for i in polymers.tolist()])
        return self.frozen[polymers]


class LossModel(nn.Module):
    """Network, embedding and task weighting as one module, so one DDP wrapper averages
    every trainable gradient."""

    def __init__(
        self,
        network: nn.Module,
        embedding: PolymerEmbedding,
        weighting: TaskWeighting,
        heads: Mapping[str, HeadSettings],
        huber_beta: Mapping[str, float],
        pos_weight: Mapping[str, float],
    ) -> None:
        super().__init__()
        self.network = network
        self.embedding = embedding
        self.weighting = weighting
        self.heads = dict(heads)
        self.huber_beta = dict(huber_beta)
        self.pos_weight = dict(pos_weight)

    def outputs(
        self, data: Rows, rows: torch.Tensor, embedded: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Every head's raw output for ``rows``; ``embedded``: every polymer's embedding,
        computed once for many calls where nothing trains, else each call embeds its own."""
        polymers, inverse = torch.unique(data.polymer[rows], return_inverse=True)
        embedding = self.embedding(polymers) if embedded is None else embedded[polymers]
        return self.network(data.features[rows], embedding, inverse, data.category[rows])

    def losses(
        self,
        data: Rows,
        rows: torch.Tensor,
        outputs: Mapping[str, torch.Tensor],
        mean_only: bool = False,
    ) -> dict[str, torch.Tensor]:
        return {
            name: head_loss(
                head,
                outputs[name],
                data.targets[name][rows],
                data.valid[name][rows],
                self.huber_beta.get(name, 1.0),
                self.pos_weight.get(name, 1.0),
                mean_only,
            )
            for name, head in self.heads.items()
        }

    def forward(
        self, data: Rows, rows: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = self.losses(data, rows, self.outputs(data, rows))
        return self.weighting(losses), losses


def pick_device(setting: str) -> torch.device:
    """The training's device; under torchrun each process takes the GPU of its local rank."""
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("surrogate.device = 'cuda' but torch sees no GPU")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"training process {local_rank} (LOCAL_RANK) has no GPU of its own: torch "
                f"sees {torch.cuda.device_count()}; start one process per GPU "
                "([train] processes) or set surrogate.device = 'cpu'"
            )
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX-BF16), where
    bf16 autocast runs matrix products 2-3 times faster than fp32; elsewhere bf16 is
    emulated and slower. Read from ``torch.cpu.get_capabilities`` where torch has it, else
    from the private helpers of ``torch.cpu`` (torch 2.13 no longer has the ``torch._C._cpu``
    ones this once read, and so always answered no)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        found = capabilities()
        return bool(found.get("avx512_bf16") or found.get("amx_bf16"))
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, c, lambda: False)() for c in checks)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype: None for fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear from 0 over the warm-up, then cosine down to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    rank, world = _rank_world()
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size][rank::world]


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def train(
    model: LossModel,
    train_rows: Rows,
    validation_rows: Rows,
    settings: HydraBertSettings,
    seed: int,
    workdir: Path,
    identity: str,
    report: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Train ``model`` in place (leaving the best epoch's weights) and return the history."""
    seed %= TORCH_SEED_RANGE
    device = train_rows.features.device
    rank, world = _rank_world()
    wrapped: nn.Module = model
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    encoder_params = [p for p in model.embedding.parameters() if p.requires_grad]
    encoder_ids = {id(p) for p in encoder_params}
    other = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids]
    groups = [{"params": other, "lr": settings.learning_rate}]
    if encoder_params:
        groups.append({"params": encoder_params, "lr": settings.encoder_learning_rate})
    # fused: one kernel over all parameters (about half the time of the per-tensor loop on CPU)
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay, fused=True)
    steps_per_epoch = math.ceil(len(train_rows) / settings.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        warmup_cosine(
            round(settings.warmup_epochs * steps_per_epoch), settings.epochs * steps_per_epoch
        ),
    )
    dtype = autocast_dtype(device, settings.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    state = _Progress(history=[], best_loss=math.inf, best_state=None, bad_epochs=0, epoch=0)
    average = None
    if settings.weight_average_epochs > 0:
        average = WeightAverage(model, max(1.0, settings.weight_average_epochs * steps_per_epoch))
    checkpoint = workdir / CHECKPOINT
    resumed = _resume(checkpoint, identity, model, optimizer, scheduler, scaler, state, average)
    if resumed:
        report(f"resuming after epoch {state.epoch} (from {checkpoint})")
    else:
        torch.manual_seed(seed)
    while state.epoch < settings.epochs and state.bad_epochs < settings.patience:
        started = time.perf_counter()
        wrapped.train()
        generator = torch.Generator().manual_seed(seed * 1009 + state.epoch)
        totals, count = 0.0, 0
        for rows in batches(len(train_rows), settings.batch_size, generator):
            with _autocast(device, dtype):
                total, _ = wrapped(train_rows, rows.to(device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), settings.gradient_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if average is not None:
                average.update()
            totals += float(total.detach()) * len(rows)
            count += len(rows)
        # With a weight average the average is what is judged, chosen and kept.
        with average.swapped_in() if average is not None else contextlib.nullcontext():
            validation, per_task = evaluate_loss(model, validation_rows, settings, dtype)
            better = validation < state.best_loss
            if better:
                state.best_state = copy.deepcopy(trained_state(model))
        state.epoch += 1
        record = {
            "epoch": state.epoch,
            "train_loss": totals / max(count, 1),
            "validation_loss": validation,
            **{f"validation_loss_{name}": value for name, value in per_task.items()},
            "learning_rate": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
        }
        state.history.append(record)
        if better:
            state.best_loss, state.bad_epochs = validation, 0
        else:
            state.bad_epochs += 1
        if rank == 0:
            _save(checkpoint, identity, model, optimizer, scheduler, scaler, state, average)
        report(
            f"epoch {state.epoch}/{settings.epochs}: train loss {record['train_loss']:.4f}, "
            f"validation loss {validation:.4f}{' (best)' if better else ''}, "
            f"{record['seconds']:.1f} s"
        )
    if state.best_state is not None:
        load_trained_state(model, state.best_state, "the best epoch's weights")
    return state.history


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What training changes: the state without the frozen parameters (a polyBERT encoder's
    26M base weights, read from its own files again), so that checkpoints and the best
    epoch's copy hold a few MB instead of a hundred."""
    frozen = _frozen_names(model)
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def load_trained_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load :func:`trained_state` (or a whole state dict) into ``model``."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    lacking = set(missing) - _frozen_names(model)
    if unexpected or lacking:
        raise ValueError(
            f"{source}: do not match the network (unexpected {sorted(unexpected)[:3]}, "
            f"missing {sorted(lacking)[:3]})"
        )


def _frozen_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def evaluate_loss(
    model: LossModel, data: Rows, settings: HydraBertSettings, dtype: torch.dtype | None
) -> tuple[float, dict[str, float]]:
    """The selection criterion over all rows, and each task's part of it.

    It is the loss of the predicted means (Huber or MSE), each task times its head's fixed
    weight. Not the training objective: validation patients are other patients, on whom the
    noise a head learned on its training patients understates the error, so their likelihood
    worsens while the means still improve. The predicted spread is calibrated on them after
    training instead. A classification head counts by its log-loss after Platt scaling on
    these rows, which is also applied after training: its raw loss there rises as its logits
    grow overconfident, which the scaling removes, and counting that against the epoch
    stopped trainings while the other heads still improved (benchmarks/RESULTS.md).
    """
    model.eval()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    logits: dict[str, list[torch.Tensor]] = {}
    labels: dict[str, list[torch.Tensor]] = {}
    device = data.features.device
    with torch.no_grad(), _autocast(device, dtype):
        # Every polymer once for the whole pass (an encoder pass, with LoRA), not per batch.
        embedded = model.embedding(torch.arange(len(model.embedding.psmiles), device=device))
        for start in range(0, len(data), settings.predict_batch_size):
            rows = torch.arange(start, min(len(data), start + settings.predict_batch_size))
            rows = rows.to(device)
            outputs = model.outputs(data, rows, embedded)
            losses = model.losses(data, rows, outputs, mean_only=True)
            for name, loss in losses.items():
                valid = data.valid[name][rows]
                if settings.heads[name].kind == "classification":
                    logits.setdefault(name, []).append(outputs[name][valid].float().cpu())
                    labels.setdefault(name, []).append(data.targets[name][rows][valid].cpu())
                    continue
                weight = float(valid.sum())
                sums[name] = sums.get(name, 0.0) + float(loss) * weight
                counts[name] = counts.get(name, 0.0) + weight
    per_task = {name: sums[name] / max(counts[name], 1.0) for name in sums}
    for name in logits:
        per_task[name] = recalibrated_log_loss(torch.cat(logits[name]), torch.cat(labels[name]))
    per_task = {name: per_task[name] for name in settings.heads if name in per_task}
    total = sum(settings.heads[name].weight * value for name, value in per_task.items())
    return float(total), per_task


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@dataclass
class _Progress:
    history: list[dict[str, Any]]
    best_loss: float
    best_state: dict[str, torch.Tensor] | None
    bad_epochs: int
    epoch: int


def _save(path: Path, identity: str, model, optimizer, scheduler, scaler, state, average) -> None:
    device = next(model.parameters()).device
    payload = {
        "identity": identity,
        "epoch": state.epoch,
        "best_loss": state.best_loss,
        "bad_epochs": state.bad_epochs,
        "history": state.history,
        "model": trained_state(model),
        "best_model": state.best_state,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        **({"weight_average": average.state_dict()} if average is not None else {}),
        "torch_rng": torch.get_rng_state(),
        # On a GPU the dropout masks come from the device's own generator.
        **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
    }
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def _resume(path: Path, identity: str, model, optimizer, scheduler, scaler, state, average) -> bool:
    """Load the last finished epoch if ``path`` holds one of this very training."""
    if not path.is_file():
        return False
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged checkpoint only means training starts again
        return False
    if payload.get("identity") != identity:
        return False
    load_trained_state(model, payload["model"], str(path))
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    if average is not None:
        average.load_state_dict(payload["weight_average"])
    torch.set_rng_state(payload["torch_rng"])
    device = next(model.parameters()).device
    if device.type == "cuda" and "cuda_rng" in payload:
        torch.cuda.set_rng_state(payload["cuda_rng"], device)
    state.epoch = payload["epoch"]
    state.best_loss = payload["best_loss"]
    state.bad_epochs = payload["bad_epochs"]
    state.history = payload["history"]
    state.best_state = payload["best_model"]
    return True
