"""IGB files, openCARP's time series of nodal values (``vm.igb``).

An IGB file is an ASCII header, then the frames. The header holds ``key:value`` tokens
separated by spaces or line breaks (``x``, ``y``, ``z``: the grid, for a mesh x the node count
and y = z = 1; ``t``: the number of frames; ``type``; ``systeme``: the byte order; ``org_t``,
``inc_t``, ``dim_t``: the first time, step and span; ``unites_t``, ``unites``: the units) in
lines of at most 72 characters ending in CR LF, padded with blank lines to a whole number of
1024-byte blocks (one, for every header openCARP writes) and closed by a form feed as the
block's last byte. The frames follow as x y z values each, frame by frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hydraopt.atomic import atomic_path
from hydraopt_simulators.opencarp.files import FormatError

HEADER_BYTES = 1024  # the header's block size
MAX_HEADER_BYTES = 64 * HEADER_BYTES
LINE_CHARACTERS = 72
FORM_FEED = "\f"
_TYPES = {"float": "f4", "double": "f8", "int": "i4", "short": "i2", "char": "i1"}
_BYTE_ORDERS = {"little_endian": "<", "big_endian": ">"}


def write_igb(
    path: Path,
    frames: np.ndarray,
    start_ms: float,
    step_ms: float,
    unit: str = "mV",
) -> None:
    """Frames ``[t, nodes]`` taken every ``step_ms`` from ``start_ms``, as float32."""
    frames = np.asarray(frames, dtype="<f4")
    if frames.ndim != 2:
        raise ValueError(f"frames must be [time, nodes], got shape {frames.shape}")
    n_frames, n_nodes = frames.shape
    tokens = [
        f"x:{n_nodes}",
        "y:1",
        "z:1",
        f"t:{n_frames}",
        "type:float",
        "systeme:little_endian",
        f"org_t:{start_ms:g}",
        f"dim_t:{max(n_frames - 1, 0) * step_ms:g}",
        f"inc_t:{step_ms:g}",
        "unites_t:ms",
        f"unites:{unit}",
    ]
    lines = [" ".join(tokens[:6]), " ".join(tokens[6:])]
    header = "".join(f"{line}\r\n" for line in lines)
    blank = " " * (LINE_CHARACTERS - 2) + "\r\n"
    while len(header) + len(blank) <= HEADER_BYTES - 3:
        header += blank
    header = header.ljust(HEADER_BYTES - 3) + "\r\n" + FORM_FEED
    with atomic_path(Path(path)) as temporary, open(temporary, "wb") as out:
        out.write(header.encode("ascii"))
        out.write(frames.tobytes())


def read_igb_header(path: Path) -> dict[str, str]:
    """The header's ``key: value`` pairs."""
    path = Path(path)
    text = _header_text(path)
    header: dict[str, str] = {}
    for token in text.replace(FORM_FEED, " ").split():
        key, sep, value = token.partition(":")
        if not sep:
            raise FormatError(f"{path.name}: header token {token!r} is not key:value")
        header[key] = value
    return header


def read_igb(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(times [ms], frames [t, nodes] as float64) of an IGB file on a mesh (y = z = 1)."""
    path = Path(path)
    header = read_igb_header(path)
    try:
        x, y, z, t = (int(header[key]) for key in ("x", "y", "z", "t"))
    except KeyError as missing:
        raise FormatError(f"{path.name}: the header has no {missing.args[0]!r}") from None
    except ValueError:
        raise FormatError(f"{path.name}: x, y, z and t must be whole numbers") from None
    kind = header.get("type")
    if kind not in _TYPES:
        raise FormatError(f"{path.name}: data type {kind!r}; expected one of {sorted(_TYPES)}")
    order = header.get("systeme", "little_endian")
    if order not in _BYTE_ORDERS:
        raise FormatError(f"{path.name}: byte order {order!r}; expected little or big endian")
    dtype = np.dtype(_BYTE_ORDERS[order] + _TYPES[kind])
    expected = x * y * z * t * dtype.itemsize
    header_bytes = len(_header_text(path))
    found = path.stat().st_size - header_bytes
    if found != expected:
        raise FormatError(
            f"{path.name}: {found} bytes of data where the header ({t} frames of "
            f"{x * y * z} {kind} values) needs {expected}: the file is "
            + ("truncated" if found < expected else "longer than its header says")
        )
    frames = np.fromfile(path, dtype=dtype, offset=header_bytes).reshape(t, x * y * z)
    try:
        start = float(header.get("org_t", 0.0))
        step = float(header["inc_t"]) if "inc_t" in header else _step(header, t)
    except ValueError:
        raise FormatError(f"{path.name}: org_t, inc_t and dim_t must be numbers") from None
    return start + step * np.arange(t), frames.astype(float)


def _step(header: dict[str, str], frames: int) -> float:
    span = float(header.get("dim_t", 0.0))
    return span / (frames - 1) if frames > 1 else 0.0


def _header_text(path: Path) -> str:
    """The header up to and with its closing form feed: whole 1024-byte blocks."""
    if not path.is_file():
        raise FormatError(f"{path.name}: no such file in {path.parent}")
    with open(path, "rb") as handle:
        raw = handle.read(MAX_HEADER_BYTES)
    end = raw.find(FORM_FEED.encode("ascii"))
    if end < 0:
        raise FormatError(
            f"{path.name}: no form feed closing the header in its first {len(raw)} bytes"
            + (": the file is shorter than a header" if len(raw) < HEADER_BYTES else "")
        )
    if (end + 1) % HEADER_BYTES:
        raise FormatError(
            f"{path.name}: the header is {end + 1} bytes, not whole {HEADER_BYTES}-byte blocks"
        )
    try:
        return raw[: end + 1].decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(f"{path.name}: the header is not ASCII text") from None
