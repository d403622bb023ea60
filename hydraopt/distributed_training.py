"""Data-parallel surrogate training through ``torchrun``.

The train stage writes a job folder (the training and validation rows, the surrogate's and
encoder's names and settings as JSON, the seed) and starts the launcher, by default
``torchrun --standalone --nproc-per-node N -m hydraopt.distributed_training JOB``; on a
cluster, ``[train] launcher`` gives the command that starts the processes on several nodes
(``srun torchrun --nnodes 2 ...``) on a filesystem they share. Every process builds the
surrogate and encoder from the handles and calls the same ``fit``: the process group is up
(NCCL for tensors on GPUs, gloo for tensors on CPUs), so the surrogate trains data-parallel
(each process takes its share of every batch and gradients are averaged) and rank 0 saves
the fitted surrogate into the job folder, which the stage loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.domain import OutputSpec, PolymerInput, SurrogateInputs, TrainingData
from hydraopt.errors import HydraoptError

FITTED = "fitted"
DONE = "done.json"


def default_launcher(processes: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
    ]


def fit_in_processes(
    job: Path,
    handles: tuple[Any, Any],
    train: TrainingData,
    validation: TrainingData,
    seed: int,
    launcher: Sequence[str],
    report: Callable[[str], None],
) -> Path:
    """Train in the launcher's processes; the folder of the fitted, saved surrogate."""
    job.mkdir(parents=True, exist_ok=True)
    _write_rows(job / "train", train)
    _write_rows(job / "validation", validation)
    described = [{"kind": h.kind, "name": h.name, "settings": h.settings_json} for h in handles]
    (job / "plugins.json").write_text(json.dumps(described))
    (job / "seed.json").write_text(json.dumps({"seed": seed}))
    (job / DONE).unlink(missing_ok=True)
    command = [*launcher, "-m", "hydraopt.distributed_training", str(job)]
    report("launching: " + " ".join(command))
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        tail: list[str] = []
        for line in process.stdout:
            tail = [*tail[-20:], line.rstrip()]
            if line.startswith("hydraopt: "):
                report(line.removeprefix("hydraopt: ").rstrip())
    if process.returncode or not (job / DONE).is_file():
        raise HydraoptError(
            f"distributed training exited with status {process.returncode}:\n" + "\n".join(tail)
        )
    return job / FITTED


def main(argv: Sequence[str] | None = None) -> None:
    """One process of the job (run by the launcher)."""
    import torch.distributed as dist

    job = Path((argv or sys.argv[1:])[0])
    # With a GPU, NCCL carries the collectives of CUDA tensors and gloo those of CPU tensors,
    # so a surrogate set to train on the CPU (surrogate.device = "cpu") still trains
    # data-parallel on a machine that has GPUs.
    backend = "cpu:gloo,cuda:nccl" if _has_gpu() else "gloo"
    dist.init_process_group(backend)
    try:
        rank = dist.get_rank()
        surrogate, encoder = (h.build_new() for h in _handles(job / "plugins.json"))
        seed = json.loads((job / "seed.json").read_text())["seed"]

        def report(line: str) -> None:
            if rank == 0:
                print(f"hydraopt: [rank 0 of {dist.get_world_size()}] {line}", flush=True)

        workdir = job / "checkpoints"
        surrogate.fit(
            _read_rows(job / "train"),
            _read_rows(job / "validation"),
            encoder,
            workdir,
            seed,
            report,
        )
        dist.barrier()
        if rank == 0:
            fitted = job / FITTED
            fitted.mkdir(exist_ok=True)
            surrogate.save(fitted)
            (job / DONE).write_text(json.dumps({"world_size": dist.get_world_size()}))
    finally:
        dist.destroy_process_group()


def _handles(path: Path) -> list[Any]:
    """The surrogate's and encoder's handles, rebuilt from their names and settings (JSON,
    validated by each plugin's settings model: nothing is unpickled)."""
    from hydraopt.registry import PluginRegistry

    registry = PluginRegistry.discover()
    handles = []
    for entry in json.loads(path.read_text()):
        model = registry.get(entry["kind"], entry["name"]).registration.settings
        settings = model.model_validate_json(entry["settings"])
        handles.append(registry.handle(entry["kind"], entry["name"], settings))
    return handles


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _write_rows(path: Path, data: TrainingData) -> None:
    inputs = data.inputs
    np.savez(
        path.with_suffix(".npz"),
        features=inputs.features,
        polymer_index=inputs.polymer_index,
        patient_id=np.asarray(inputs.patient_id, dtype=str),
        **{f"target__{name}": values for name, values in data.targets.items()},
    )
    meta = {
        "polymers": [[p.name, p.psmiles, p.category] for p in inputs.polymers],
        "specs": [[s.name, s.unit, s.description, list(s.shape)] for s in data.specs],
    }
    path.with_suffix(".json").write_text(json.dumps(meta))


def _read_rows(path: Path) -> TrainingData:
    meta = json.loads(path.with_suffix(".json").read_text())
    with np.load(path.with_suffix(".npz")) as arrays:
        inputs = SurrogateInputs(
            features=arrays["features"],
            polymer_index=arrays["polymer_index"],
            polymers=tuple(PolymerInput(*p) for p in meta["polymers"]),
            patient_id=arrays["patient_id"].astype(object),
        )
        specs = tuple(OutputSpec(n, u, d, tuple(s)) for n, u, d, s in meta["specs"])
        targets = {s.name: arrays[f"target__{s.name}"] for s in specs}
    return TrainingData(inputs, targets, specs)


if __name__ == "__main__":
    main()
