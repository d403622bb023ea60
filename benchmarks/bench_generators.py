"""Candidate generation throughput: designs per second per generator, on one core.

Stage 3 generates millions of candidates per patient; generation must stay far cheaper than
scoring them. Usage: ``python benchmarks/bench_generators.py [--designs 1000000]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hydraopt.config import DesignSpaceConfig, build_design_space
from hydraopt.polymer_library import read_polymer_library
from hydraopt.registry import PluginRegistry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--designs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    space = build_design_space(DesignSpaceConfig(), read_polymer_library())
    registry = PluginRegistry.discover()
    print(
        f"{args.designs:,} designs over {len(space.polymers)} polymers x "
        f"{len(space.coverages)} coverages, best of {args.repeats}"
    )
    print(f"{'generator':<16}{'seconds':>10}{'designs/s':>16}{'bytes/design':>14}")
    for name in registry.names("generator"):
        settings = registry.validate_settings("generator", name, {})
        generator = registry.create("generator", name, settings)
        if callable(getattr(generator, "around", None)):  # samples around a policy's proposals
            proposals = space.designs_from_unit(
                np.arange(32) % len(space.polymers), np.arange(32) % 4, np.full((32, 4), 0.5)
            )
            generator = generator.around(proposals)
        best = np.inf
        for repeat in range(args.repeats):
            start = time.perf_counter()
            batch = generator.generate(space, args.designs, np.random.default_rng(repeat))
            best = min(best, time.perf_counter() - start)
        size = sum(v.nbytes for v in batch.columns().values()) / len(batch)
        print(f"{name:<16}{best:>10.3f}{args.designs / best:>16,.0f}{size:>14.0f}")


if __name__ == "__main__":
    main()
