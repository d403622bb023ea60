"""A stand-in for the openCARP program, for tests: reads what openCARP reads, writes what it
writes, with a made-up beat.

Called as openCARP is (``+F sim.par -simID out [-key value ...]``, from the design's folder),
it reads the parameter file, the mesh and the stimulus vertex files the parameters name, and
writes ``init_acts_<ID>-thresh.dat`` for each ``lats[]`` detector and ``vm.igb`` into the
output folder. The beat is an eikonal stand-in: activation is the shortest travel time over
the mesh's edges from the stimulated nodes (each from its stimulus's start), at a velocity
that grows as the square root of the element's monodomain conductivity along the edge
(0.6 m/s along fibres at tag 0's conductivity); nodes only in passive elements never activate;
repolarisation follows a fixed action potential duration.

``STANDIN_MODE`` makes it fail on purpose: ``error`` (prints an error, exits 1), ``hang``
(never ends; writes its and a child process's ids to ``standin.pids``), ``garbage`` (a
malformed activation file), ``missing`` (exits 0 without outputs). ``STANDIN_DESIGNS`` (folder
names, comma-separated) limits the mode to those designs' folders.
"""

import os
import subprocess
import sys
import time
from pathlib import Path


def hang_if_told() -> None:
    """The ``hang`` mode, before the heavy imports, so that a short timeout in a test never
    kills the program before it has written ``standin.pids``."""
    chosen = os.environ.get("STANDIN_DESIGNS", "")
    if os.environ.get("STANDIN_MODE") != "hang" or (
        chosen and Path.cwd().name not in chosen.split(",")
    ):
        return
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path("standin.pids").write_text(f"{os.getpid()} {child.pid}\n")
    time.sleep(600)


hang_if_told()

import numpy as np  # noqa: E402
from scipy.sparse import csr_matrix  # noqa: E402
from scipy.sparse.csgraph import dijkstra  # noqa: E402

from hydraopt_simulators.opencarp.files import read_mesh, read_vertices  # noqa: E402
from hydraopt_simulators.opencarp.igb import write_igb  # noqa: E402
from hydraopt_simulators.opencarp.parameters import read_parameter_file  # noqa: E402
from hydraopt_simulators.opencarp.results import event_file, write_event_times_ms  # noqa: E402

REST_MV, PLATEAU_MV = -86.2, 40.0
ACTION_POTENTIAL_MS = 250.0
VELOCITY_M_PER_S = 0.6
EDGES = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def main(argv: list[str]) -> int:
    print("stand-in openCARP:", " ".join(argv), flush=True)
    parameters = command_line(argv)
    mode = os.environ.get("STANDIN_MODE", "ok")
    chosen = os.environ.get("STANDIN_DESIGNS", "")
    if chosen and Path.cwd().name not in chosen.split(","):
        mode = "ok"
    if mode == "error":
        print("L4 ERROR: the stand-in was told to fail", flush=True)
        return 1
    output = Path(parameters["simID"])
    output.mkdir(exist_ok=True)
    if mode == "missing":
        return 0
    activation, repolarisation, vm, step_ms = beat(parameters)
    detectors = {
        int(parameters[f"lats[{k}].mode"]): parameters[f"lats[{k}].ID"]
        for k in range(int(parameters["num_LATs"]))
    }
    write_event_times_ms(event_file(output, detectors[0]), activation)
    write_event_times_ms(event_file(output, detectors[1]), repolarisation)
    if mode == "garbage":
        path = event_file(output, detectors[0])
        lines = path.read_text().splitlines()
        lines[2] = "####"
        path.write_text("\n".join(lines) + "\n")
    write_igb(output / "vm.igb", vm, 0.0, step_ms)
    print("stand-in openCARP: done", flush=True)
    return 0


def command_line(argv: list[str]) -> dict[str, str]:
    """The parameter file's values, overridden by ``-key value`` options."""
    if len(argv) < 2 or argv[0] != "+F":
        raise SystemExit("usage: openCARP +F file.par [-key value ...]")
    parameters = read_parameter_file(Path(argv[1]))
    options = argv[2:]
    for key, value in zip(options[::2], options[1::2], strict=True):
        parameters[key.lstrip("-")] = value
    return parameters


def beat(parameters: dict[str, str]):
    mesh = read_mesh(Path(parameters["meshname"]))
    n = len(mesh.points_um)
    conductivity = monodomain_conductivities(parameters)
    passive_tags = {
        int(parameters[f"imp_region[{k}].ID[{i}]"])
        for k in range(int(parameters["num_imp_regions"]))
        if parameters[f"imp_region[{k}].im"] == "PASSIVE"
        for i in range(int(parameters[f"imp_region[{k}].num_IDs"]))
    }
    times = travel_times_ms(mesh, conductivity, stimuli(parameters), n)
    tend = float(parameters["tend"])
    passive = np.ones(n, dtype=bool)
    active_elements = ~np.isin(mesh.tags, list(passive_tags))
    passive[mesh.tetrahedra[active_elements].ravel()] = False
    activation = np.where((times <= tend) & ~passive, times, np.inf)
    repolarisation = activation + ACTION_POTENTIAL_MS
    repolarisation[repolarisation > tend] = np.inf
    step = float(parameters["spacedt"])
    t = np.arange(0.0, tend + 1e-9, step)[:, None]
    vm = np.where((t >= activation) & (t < repolarisation), PLATEAU_MV, REST_MV)
    return activation, repolarisation, vm, step


def monodomain_conductivities(parameters: dict[str, str]) -> dict[int, tuple[float, float]]:
    """Tag -> (along, across): the harmonic mean of intra- and extracellular values."""
    result = {}
    for k in range(int(parameters["num_gregions"])):
        g = {
            key: float(parameters[f"gregion[{k}].{key}"])
            for key in ("g_il", "g_it", "g_el", "g_et")
        }
        along = g["g_il"] * g["g_el"] / (g["g_il"] + g["g_el"])
        across = g["g_it"] * g["g_et"] / (g["g_it"] + g["g_et"])
        for i in range(int(parameters[f"gregion[{k}].num_IDs"])):
            result[int(parameters[f"gregion[{k}].ID[{i}]"])] = (along, across)
    return result


def stimuli(parameters: dict[str, str]) -> list[tuple[np.ndarray, float]]:
    found = []
    for k in range(int(parameters["num_stim"])):
        name = parameters[f"stim[{k}].elec.vtx_file"]
        path = Path(name if name.endswith(".vtx") else name + ".vtx")
        found.append((read_vertices(path), float(parameters[f"stim[{k}].ptcl.start"])))
    return found


def travel_times_ms(mesh, conductivity, stimuli, n: int) -> np.ndarray:
    reference = conductivity[0][0]
    along = np.array([conductivity[int(tag)][0] for tag in mesh.tags])
    across = np.array([conductivity[int(tag)][1] for tag in mesh.tags])
    pairs = np.concatenate([mesh.tetrahedra[:, [a, b]] for a, b in EDGES])
    vectors = (mesh.points_um[pairs[:, 1]] - mesh.points_um[pairs[:, 0]]) * 1e-6
    length = np.linalg.norm(vectors, axis=1)
    fibres = np.tile(mesh.fibres, (len(EDGES), 1))
    cos2 = (np.einsum("ij,ij->i", vectors, fibres) / length) ** 2
    sigma = (
        np.tile(across, len(EDGES))
        + (np.tile(along, len(EDGES)) - np.tile(across, len(EDGES))) * cos2
    )
    weight_ms = 1e3 * length / (VELOCITY_M_PER_S * np.sqrt(sigma / reference))
    # A virtual node n reaches each stimulated node at its stimulus's start (+1 ms, since a
    # sparse graph cannot hold a zero-weight edge; taken off below).
    sources = [
        (np.full(len(nodes), n), nodes, np.full(len(nodes), start + 1.0))
        for nodes, start in stimuli
    ]
    rows = np.concatenate([np.sort(pairs, axis=1)[:, 0], *(s[0] for s in sources)])
    cols = np.concatenate([np.sort(pairs, axis=1)[:, 1], *(s[1] for s in sources)])
    weights = np.concatenate([weight_ms, *(s[2] for s in sources)])
    order = np.lexsort((weights, cols, rows))
    rows, cols, weights = rows[order], cols[order], weights[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])  # the fastest of duplicates
    graph = csr_matrix((weights[first], (rows[first], cols[first])), shape=(n + 1, n + 1))
    return dijkstra(graph, directed=False, indices=n)[:n] - 1.0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
