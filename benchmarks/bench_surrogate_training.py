"""Cost of the seeds' Stage 1 training recipe on this machine.

The recipe (seeds/001 section 6): 447,480 rows, 15 epochs of 8192-row batches, LoRA (r 16)
on an encoder of polyBERT's size (DeBERTa-v2, hidden 600, 12 layers; randomly initialised,
since the weights cannot be downloaded here, with a SentencePiece tokenizer trained on the
library's PSMILES), the seeds' three heads on the MLP fusion. Rows are synthetic (features
drawn uniformly, polymers from the bundled library, targets a smooth function): cost does not
depend on their values.

It times ``--steps`` optimiser steps of the whole model, and of the same network with frozen
embeddings (no encoder pass), and prints rows per second, the encoder's share of a step, and
the recipe's projected wall time: its steps, and a validation pass over the seeds' 89,496
rows after each epoch, timed at that size. ``--full`` trains the whole recipe instead, with
a validation split of that size, and prints its measured time. A speed-up of the training
can be switched off to measure what it gives: ``lane-dropout`` (dropout masks from 16-bit
lanes, plugins/lane_dropout.py; off: torch's ``nn.Dropout``) and ``token-packing`` (the
encoder's token-wise layers on its tokens without padding, plugins/encoders/packed_deberta.py;
off: transformers' padded forward pass, a pass per length group). ``--without NAME`` switches
it off; ``--compare NAME --rounds N`` times LoRA steps with and without it, alternating in
this one process so that both see the same machine, and prints the ratio.
``--compare-padding-waste W`` compares in the same way the encoder's length groups
(``padding_waste``, the padding a group may hold) at W and at ``--padding-waste``.

On a GPU (``--device cuda``, or ``auto`` where torch sees one) the same training runs there
in the surrogate's mixed precision (bf16 autocast where the GPU has it, else fp16 with a
gradient scaler).

    python benchmarks/bench_surrogate_training.py [--steps 8] [--threads 2] [--full]
        [--precision auto|fp32|bf16|fp16] [--device auto|cpu|cuda] [--without NAME]
        [--padding-waste W] [--compare NAME --rounds 3]
        [--compare-padding-waste W --rounds 3] [--profile 25]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from hydraopt.domain import OutputSpec, PolymerInput, SurrogateInputs, TrainingData
from hydraopt.domain.training import DATASET_FEATURE_NAMES, polymer_inputs
from hydraopt.polymer_library import read_polymer_library
from hydraopt_plugins.encoders import PolyBertSettings
from hydraopt_plugins.encoders.polybert import PolyBertEncoder
from hydraopt_plugins.encoders.polybert_untrained import (
    POLYBERT_ARCHITECTURE,
    write_untrained_polybert,
)
from hydraopt_plugins.surrogates import HydraBertSettings
from hydraopt_plugins.surrogates.hydrabert.surrogate import HydraBertSurrogate
from hydraopt_plugins.surrogates.hydrabert.training import (
    autocast_dtype,
    evaluate_loss,
    pick_device,
)

ROWS = 447_480
EPOCHS = 15
BATCH = 8192
VALIDATION_ROWS = 89_496  # the seeds' validation split, scored after every epoch
SPECS = (
    OutputSpec("delta_ef_pct", "%-points", ""),
    OutputSpec("is_optimal", "1", ""),
    OutputSpec("bz_stress_reduction_pct", "%", ""),
)


def synthetic_rows(n: int, polymers: tuple[PolymerInput, ...], seed: int) -> TrainingData:
    rng = np.random.default_rng(seed)
    features = rng.uniform(0.5, 2.0, (n, len(DATASET_FEATURE_NAMES)))
    polymer = rng.integers(0, len(polymers), n)
    signal = features[:, :4].sum(1) + 0.1 * polymer
    targets = {
        "delta_ef_pct": signal,
        "is_optimal": (signal > np.quantile(signal, 0.9)).astype(float),
        "bz_stress_reduction_pct": 2 * signal,
    }
    patients = np.full(n, "P", dtype=object)
    return TrainingData(SurrogateInputs(features, polymer, polymers, patients), targets, SPECS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="optimiser steps to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="train the whole recipe")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="the surrogate's precision setting ('auto': bf16 autocast on a GPU that has it "
        "or a CPU with native bf16, fp16 on an older GPU)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="the surrogate's device setting ('auto': a GPU when torch sees one)",
    )
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=sorted(SPEED_UPS),
        help="switch this speed-up off (repeatable)",
    )
    comparison = parser.add_mutually_exclusive_group()
    comparison.add_argument(
        "--compare",
        choices=sorted(SPEED_UPS),
        help="time --steps LoRA steps with and without this speed-up, alternating",
    )
    parser.add_argument(
        "--padding-waste",
        type=float,
        default=PolyBertSettings.model_fields["padding_waste"].default,
        help="the encoder's padding_waste (its length groups; default: the setting's)",
    )
    comparison.add_argument(
        "--compare-padding-waste",
        type=float,
        metavar="WASTE",
        help="time --steps LoRA steps with this padding_waste and with --padding-waste, "
        "alternating",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of a comparison")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="ROWS",
        help="profile the LoRA training (torch.profiler) and print its ROWS costliest operators",
    )
    args = parser.parse_args()
    if args.compare_padding_waste == args.padding_waste:
        parser.error("--compare-padding-waste must differ from --padding-waste (or its default)")
    torch.set_num_threads(args.threads)
    library = read_polymer_library(None)
    polymers = polymer_inputs(library)
    folder = Path(tempfile.mkdtemp(prefix="polybert-size-"))
    distinct = sorted({p.psmiles for p in polymers})
    write_untrained_polybert(folder, distinct * 20, POLYBERT_ARCHITECTURE)
    for name in args.without:
        _switch(name, on=False)
    encoder = _encoder(folder, args.padding_waste)
    off = ", ".join(args.without) or "none"
    module = encoder.trainable_module()  # the model that trains: the frozen one with LoRA
    tokens = [len(module.tokenizer(s)["input_ids"]) for s in distinct]
    parameters = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    print(f"encoder: {parameters / 1e6:.1f}M parameters, LoRA {trainable / 1e6:.2f}M trainable")
    print(
        f"polymers: {len(polymers)} ({len(distinct)} distinct PSMILES), tokens per PSMILES "
        f"{min(tokens)}-{max(tokens)} (total {sum(tokens)})"
    )
    rows = ROWS if args.full else args.steps * BATCH
    train = synthetic_rows(rows, polymers, 0)
    validation = synthetic_rows(VALIDATION_ROWS if args.full else BATCH, polymers, 1)
    epochs = EPOCHS if args.full else 1
    settings = HydraBertSettings(
        epochs=epochs,
        batch_size=BATCH,
        mc_samples=1,
        precision=args.precision,
        device=args.device,
    )
    device = pick_device(settings.device)
    dtype = autocast_dtype(device, settings.precision) or torch.float32
    print(
        f"device: {_device_name(device, args.threads)}; precision: {args.precision}, matrix "
        f"products in {str(dtype).removeprefix('torch.')}; speed-ups switched off: {off}"
    )
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    if args.compare or args.compare_padding_waste is not None:
        _compare(_variants(args, folder), args.rounds, train, validation, settings, work)
        return
    start = time.perf_counter()
    with _profiled(args.profile, device):
        step_s, fitted = _lora_training(encoder, train, validation, settings, work)
    seconds = time.perf_counter() - start
    frozen_step_s = _frozen_step_seconds(train, polymers, settings, args.steps, work)
    share = 1 - frozen_step_s / step_s
    print(
        f"one step of {BATCH} rows: {step_s:.2f} s with LoRA, {frozen_step_s:.2f} s with "
        f"frozen embeddings; encoder share {100 * share:.0f}%"
    )
    print(f"rows per second: {BATCH / step_s:,.0f} (LoRA), {BATCH / frozen_step_s:,.0f} (frozen)")
    steps = EPOCHS * math.ceil(ROWS / BATCH)
    # The floor: a forward pass costs 2 flops per weight and token, the backward pass to the
    # LoRA adapters as much again (gradients of the activations through the frozen weights).
    layer_weights = parameters - sum(
        p.numel() for n, p in module.named_parameters() if "embeddings" in n
    )
    step_flops = 4 * layer_weights * sum(tokens)
    rate = _matmul_flops_per_s(sum(tokens), POLYBERT_ARCHITECTURE["hidden_size"], dtype, device)
    floor = steps * (step_flops / rate + frozen_step_s)
    print(
        f"floor: {step_flops / 1e9:.0f} GFLOP per encoder step at this machine's "
        f"{rate / 1e9:.0f} GFLOP/s {str(dtype).removeprefix('torch.')} matrix product, plus "
        f"the rest of the step as measured: {floor / 60:.1f} min for the recipe"
    )
    if args.full:
        print(f"recipe ({ROWS:,} rows x {EPOCHS} epochs): measured {seconds / 60:.1f} min")
    else:
        # A validation pass encodes the polymers once per prediction batch, not once per row,
        # so it is timed at the seeds' size rather than scaled up from a small one.
        seeds_validation = synthetic_rows(VALIDATION_ROWS, polymers, 2)
        validation_s = _validation_seconds(fitted, seeds_validation, settings)
        projected = steps * step_s + EPOCHS * validation_s
        print(
            f"recipe ({ROWS:,} rows x {EPOCHS} epochs = {steps} steps, validation on the "
            f"seeds' {VALIDATION_ROWS:,} rows each epoch, {validation_s:.2f} s a pass): "
            f"projected {projected / 60:.1f} min"
        )


def _device_name(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return f"CPU, {threads} threads (torch {torch.__version__})"


def _matmul_flops_per_s(rows: int, width: int, dtype: torch.dtype, device: torch.device) -> float:
    """Matrix products of the encoder's shape (tokens x hidden @ hidden x hidden) in the
    training's autocast dtype, on the training's device."""
    a = torch.randn(rows, width, dtype=dtype, device=device)
    b = torch.randn(width, width, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    _synchronize(device)
    start = time.perf_counter()
    repeats = 50
    for _ in range(repeats):
        a @ b
    _synchronize(device)
    return 2 * rows * width * width * repeats / (time.perf_counter() - start)


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a host clock times it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _profiled(rows: int, device: torch.device) -> Iterator[None]:
    """Profile the block with torch.profiler and print its ``rows`` costliest operators by
    their own time on the device (the CPU, or the GPU's kernels); nothing when ``rows`` is 0."""
    if not rows:
        yield
        return
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as profiler:
        yield
    by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(profiler.key_averages().table(sort_by=by, row_limit=rows, max_name_column_width=60))
    if device.type == "cuda":  # the host's side: launches, Python, synchronisation
        table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
        print(table)


def _lora_training(encoder, train, validation, settings, work) -> tuple[float, HydraBertSurrogate]:
    """Seconds per optimiser step of a training with LoRA, and the trained surrogate."""
    surrogate = HydraBertSurrogate(settings)
    surrogate.fit(train, validation, encoder, work / "lora", seed=0, report=_progress)
    history = surrogate.history
    train_s = sum(h["seconds"] for h in history)
    validation_s = _validation_seconds(surrogate, validation, settings)
    steps = len(history) * math.ceil(len(train) / settings.batch_size)
    return (train_s - validation_s * len(history)) / steps, surrogate


def _progress(line: str) -> None:
    print(f"  {line}", flush=True)


def _compare(
    variants: dict[str, Callable[[], PolyBertEncoder]],
    rounds: int,
    train: TrainingData,
    validation: TrainingData,
    settings: HydraBertSettings,
    work: Path,
) -> None:
    """LoRA steps of two variants (each a function that sets it up and builds its encoder),
    alternating in this one process, so that both see the same machine; the first variant's
    median step as a share of the second's."""
    seconds: dict[str, list[float]] = {label: [] for label in variants}
    for round_ in range(rounds):
        for index, (label, build) in enumerate(variants.items()):
            step_s, _ = _lora_training(
                build(), train, validation, settings, work / f"{index}-{round_}"
            )
            seconds[label].append(step_s)
            print(f"round {round_ + 1}, {label}: {step_s:.2f} s per step", flush=True)
    (first, first_s), (second, second_s) = (
        (label, float(np.median(v))) for label, v in seconds.items()
    )
    print(
        f"median step: {first_s:.2f} s {first}, {second_s:.2f} s {second}: "
        f"{first_s / second_s:.2f} of the time"
    )


def _encoder(folder: Path, padding_waste: float) -> PolyBertEncoder:
    settings = PolyBertSettings(
        model=str(folder),
        padding_waste=padding_waste,
        token_packing="token-packing" not in _SWITCHED_OFF,
    )
    return PolyBertEncoder(settings)


def _variants(args: argparse.Namespace, folder: Path) -> dict[str, Callable[[], PolyBertEncoder]]:
    """The two variants that ``--compare`` or ``--compare-padding-waste`` alternates."""
    waste = args.padding_waste
    if args.compare_padding_waste is not None:
        return {
            f"with padding_waste {args.compare_padding_waste}": lambda: _encoder(
                folder, args.compare_padding_waste
            ),
            f"with padding_waste {waste}": lambda: _encoder(folder, waste),
        }
    name = args.compare

    def build(on: bool) -> PolyBertEncoder:
        _switch(name, on)
        return _encoder(folder, waste)

    return {f"with {name}": lambda: build(True), f"without {name}": lambda: build(False)}


def _switch(name: str, on: bool) -> None:
    """Turn a speed-up on or off where the encoder and the network are built (an encoder
    setting is read by :func:`_encoder`)."""
    if on:
        _SWITCHED_OFF.discard(name)
    else:
        _SWITCHED_OFF.add(name)
    for module, attribute in SPEED_UPS[name]():
        original = _ORIGINALS.setdefault((module.__name__, attribute), getattr(module, attribute))
        setattr(module, attribute, original if on else _nothing)


def _nothing(model: torch.nn.Module) -> int:
    return 0


def _lane_dropout_sites():
    from hydraopt_plugins.encoders import polybert
    from hydraopt_plugins.surrogates.hydrabert import network

    return [(polybert, "use_lane_dropout"), (network, "use_lane_dropout")]


def _no_sites() -> list:
    return []  # an encoder setting


SPEED_UPS = {"lane-dropout": _lane_dropout_sites, "token-packing": _no_sites}
_ORIGINALS: dict[tuple[str, str], object] = {}
_SWITCHED_OFF: set[str] = set()


def _validation_seconds(surrogate, validation, settings) -> float:
    """A validation pass as the training runs it, in its autocast dtype."""
    rows = surrogate._rows(validation, surrogate._members[0].embedding.psmiles)
    dtype = autocast_dtype(surrogate.device, settings.precision)
    start = time.perf_counter()
    evaluate_loss(surrogate._members[0], rows, settings, dtype)
    return time.perf_counter() - start


def _frozen_step_seconds(train, polymers, settings, steps, work) -> float:
    from hydraopt_plugins.encoders import NoEncoder

    class FrozenTable(NoEncoder):
        """polyBERT-width embeddings without the encoder pass."""

        embedding_dim = POLYBERT_ARCHITECTURE["hidden_size"]
        fingerprint = "frozen-table"

        def encode(self, psmiles):
            rng = np.random.default_rng(0)
            return rng.normal(size=(len(psmiles), self.embedding_dim)).astype(np.float32)

    # One epoch of ``steps`` steps, also after --full trained the whole recipe.
    rows = train.take(slice(0, steps * BATCH))
    model = HydraBertSurrogate(settings.model_copy(update={"epochs": 1}))
    start = time.perf_counter()
    model.fit(rows, rows.take(slice(0, 1)), FrozenTable(None), work / "frozen", seed=0)
    return (time.perf_counter() - start) / math.ceil(len(rows) / BATCH)


if __name__ == "__main__":
    main()
