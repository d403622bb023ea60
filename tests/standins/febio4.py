"""A stand-in for ``febio4`` in tests: reads a real FEBio 4 input file and writes FEBio's real
output formats (logfile data files, the termination banner), without FEBio's mechanics.

The heart inflates about its long axis (x) in proportion to the cavity pressure over the
mean passive stiffness c1 of its parts, then shortens with the activation: a format- and
protocol-faithful answer, not a physical one. ``FEBIO_STANDIN_MODE`` picks a behaviour:
ok, error (error banner, exit 1), banner-error (error banner, exit 0), no-banner, hang,
garbage (malformed data file), missing (normal end, no data files), diverge (a filled
shape that no unloaded geometry reaches).
"""

import os
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np


def main() -> int:
    args = sys.argv[1:]
    feb = Path(args[args.index("-i") + 1])
    mode = os.environ.get("FEBIO_STANDIN_MODE", "ok")
    only = os.environ.get("FEBIO_STANDIN_ONLY")  # a folder name: misbehave only there
    if only and only not in str(Path.cwd()):
        mode = "ok"
    print("===========================================================================")
    print("         F E B i o   (stand-in for tests)")
    print(f" Reading file {feb} ...SUCCESS!")
    if mode == "hang":
        sys.stdout.flush()
        time.sleep(3600)
    root = ET.parse(feb).getroot()
    assert root.tag == "febio_spec" and root.get("version") == "4.0"
    points = np.array([[float(v) for v in n.text.split(",")] for n in root.iter("node")])
    # The tissue's c1: the material's own, or its mixture's first solid's.
    c1 = {m.get("name"): float(next(m.iter("c1")).text) for m in root.iter("material")}
    control = root.find("Control")
    end_time = int(control.find("time_steps").text) * float(control.find("step_size").text)
    counts = {b.get("name"): len(b.findall("elem")) for b in root.iter("Elements")}
    stiffness = sum(c1[name] * n for name, n in counts.items()) / sum(counts.values())
    curve = {
        c.get("id"): [tuple(map(float, p.text.split(","))) for p in c.iter("pt")]
        for c in root.iter("load_controller")
    }
    pressure = dict(curve["1"])
    activation = dict(curve["2"])
    ids = np.array([int(e.get("id")) for b in root.iter("Elements") for e in b.iter("elem")])
    logfile = root.find("Output/logfile")
    node_file = logfile.find("node_data").get("file")
    element_file = logfile.find("element_data").get("file")
    if mode == "error":
        print(" *** Error *** Negative jacobian was detected at element 17")
        print("\n E R R O R   T E R M I N A T I O N\n")
        return 1
    if mode == "banner-error":
        print("\n E R R O R   T E R M I N A T I O N\n")
        return 0
    if mode == "no-banner":
        return 0
    if mode != "missing":
        with (
            open(feb.parent / node_file, "w") as nodes,
            open(feb.parent / element_file, "w") as elements,
        ):
            times = [t for t in (0.5, 1.0, 1.5, 2.0) if t <= end_time + 1e-9]
            for step, t in enumerate(times, start=1):
                p = np.interp(t, *zip(*sorted(pressure.items()), strict=True))
                a = np.interp(t, *zip(*sorted(activation.items()), strict=True))
                radial = 0.02 * p / stiffness - 0.15 * a
                if mode == "diverge":  # the filled shape overshoots: unloading cannot converge
                    radial = -3.0 * t
                deformation = np.eye(3) + radial * np.diag([0.0, 1.0, 1.0])
                u = points * radial * np.array([0.0, 1.0, 1.0])
                for handle, data in (
                    (nodes, "ux;uy;uz"),
                    (elements, "sx;sy;sz;sxy;syz;sxz;Fxx;Fxy;Fxz;Fyx;Fyy;Fyz;Fzx;Fzy;Fzz"),
                ):
                    handle.write(f"*Step  = {step}\n*Time  = {t:.9g}\n*Data  = {data}\n")
                for i, row in enumerate(u, start=1):
                    nodes.write(f"{i} {row[0]:g} {row[1]:g} {row[2]:g}\n")
                stress = [0.0, p * 10 + 50 * a, p * 10 + 50 * a, 0.0, 0.0, 0.0]
                values = " ".join(f"{v:g}" for v in [*stress, *deformation.ravel()])
                for element_id in ids:
                    if mode == "garbage" and element_id == ids[-1] and t == times[-1]:
                        elements.write(f"{element_id} nan-ish ###\n")
                    else:
                        elements.write(f"{element_id} {values}\n")
    print("\n N O R M A L   T E R M I N A T I O N\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
