"""openCARP's event-time files: what its ``lats[]`` detectors write.

A detector with ``all = 0`` writes ``init_acts_<ID>-thresh.dat`` into the simulation's output
folder: one line per node, the time [ms] V_m first crossed the threshold in the detector's
direction, ``-1`` where it never did. Here "never" is ``inf``, as the reference model's
measures take it (:func:`~hydraopt_simulators.ep.activation.measures` counts a node as
activated where its time is finite).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hydraopt.atomic import atomic_path
from hydraopt_simulators.opencarp.files import FormatError

NEVER = -1.0  # what openCARP writes for a node whose threshold was never crossed


def event_file(output_dir: Path, event_id: str) -> Path:
    return Path(output_dir) / f"init_acts_{event_id}-thresh.dat"


def read_event_times_ms(path: Path, n_nodes: int) -> np.ndarray:
    """Per node, the event's time [ms]; ``inf`` where it never happened."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path.name}: openCARP wrote no such file in {path.parent}")
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if len(lines) != n_nodes:
        raise FormatError(f"{path.name}: {len(lines)} values for a mesh of {n_nodes} nodes")
    try:
        times = np.array([float(line) for line in lines])
    except ValueError:
        bad = next(n for n, line in enumerate(lines, 1) if not _is_number(line))
        raise FormatError(f"{path.name} line {bad}: {lines[bad - 1]!r} is not a number") from None
    never = times == NEVER
    invalid = ~np.isfinite(times) | ((times < 0) & ~never)
    if invalid.any():
        raise FormatError(
            f"{path.name}: {int(invalid.sum())} values are neither times nor {NEVER:g} "
            f"(first at line {int(np.argmax(invalid)) + 1})"
        )
    return np.where(never, np.inf, times)


def write_event_times_ms(path: Path, times_ms: np.ndarray) -> None:
    """Times as openCARP writes them (``inf``/NaN: never, written -1)."""
    times = np.asarray(times_ms, dtype=float)
    written = np.where(np.isfinite(times), times, NEVER)
    with atomic_path(Path(path)) as temporary:
        temporary.write_text("".join(f"{value:.6f}\n" for value in written))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
