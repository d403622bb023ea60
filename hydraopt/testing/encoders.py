"""Conformance of polymer encoders: embeddings a surrogate can rely on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hydraopt.plugin_types import Encoder, EncoderPlugin
from hydraopt.testing.examples import example_space
from hydraopt.testing.registration import check_registration, confined

# Not a polymer: an unclosed branch, which no chemistry toolkit parses.
BAD_PSMILES = "[*]CC(C[*]"
# Agreement asked of one PSMILES's embedding across batches (padding in a transformer
# changes float sums slightly, never the meaning).
BATCH_ATOL = 1e-5


def example_psmiles() -> list[str]:
    """The repeat units of :func:`example_space`'s polymers and two more."""
    return [p.psmiles for p in example_space().polymers] + ["[*]CC(C)C(=O)O[*]", "[*]CCN[*]"]


def check_encoder(
    encoder: Encoder, psmiles: Sequence[str] | None = None, bad_psmiles: str | None = BAD_PSMILES
) -> np.ndarray:
    """An encoder gives ``float32 [n, embedding_dim]`` finite embeddings, deterministically,
    each PSMILES's the same in any batch; ``fingerprint`` is set; a PSMILES it cannot read
    (``bad_psmiles``; None to skip) is a ``ValueError`` naming it; a trainable module, if
    any, maps PSMILES to ``[n, embedding_dim]`` tensors that gradients flow back through."""
    assert isinstance(encoder, Encoder), (
        "embedding_dim, fingerprint, encode(psmiles) or trainable_module() missing"
    )
    dim = encoder.embedding_dim
    assert isinstance(dim, int) and dim >= 0, f"embedding_dim must be an int >= 0, got {dim!r}"
    assert isinstance(encoder.fingerprint, str) and encoder.fingerprint, (
        "fingerprint must be a non-empty string that changes with the weights and settings"
    )
    psmiles = list(psmiles or example_psmiles())
    embedded = encoder.encode(psmiles)
    assert isinstance(embedded, np.ndarray), f"encode returned {type(embedded).__name__}"
    assert embedded.dtype == np.float32, f"encode returned dtype {embedded.dtype}, not float32"
    assert embedded.shape == (len(psmiles), dim), (
        f"encode returned shape {embedded.shape} for {len(psmiles)} PSMILES, expected "
        f"{(len(psmiles), dim)}"
    )
    assert np.all(np.isfinite(embedded)), "encode returned NaN or infinite values"
    assert np.array_equal(encoder.encode(psmiles), embedded), "encode is not deterministic"
    reordered = encoder.encode(psmiles[::-1] + psmiles[:1])
    assert np.allclose(reordered[:-1][::-1], embedded, atol=BATCH_ATOL), (
        "a PSMILES's embedding depends on the other PSMILES of its batch"
    )
    assert np.allclose(reordered[-1], embedded[0], atol=BATCH_ATOL), (
        "a PSMILES repeated in a batch gets another embedding"
    )
    assert encoder.encode([]).shape == (0, dim), "encode([]) must give shape (0, embedding_dim)"
    if dim > 0 and bad_psmiles is not None:
        try:
            encoder.encode([bad_psmiles])
        except ValueError as exc:
            assert bad_psmiles in str(exc), (
                f"the error for an unreadable PSMILES must name it: {exc}"
            )
        else:
            raise AssertionError(f"encode accepted {bad_psmiles!r}, which is not a polymer")
    _check_trainable(encoder, psmiles)
    return embedded


def _check_trainable(encoder: Encoder, psmiles: list[str]) -> None:
    module = encoder.trainable_module()
    if module is None:
        return
    import torch

    assert isinstance(module, torch.nn.Module), (
        f"trainable_module() must return None or a torch.nn.Module, got {type(module).__name__}"
    )
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert trainable, "the trainable module has no parameter that requires a gradient"
    again = encoder.trainable_module()
    shared = {id(p) for p in trainable} & {id(p) for p in again.parameters()}
    assert again is not module and not shared, (
        "trainable_module() must return a new module with parameters of its own on every "
        "call: each surrogate trains its own (one training must not change another's)"
    )
    module.train()
    out = module(psmiles)
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (
        len(psmiles),
        encoder.embedding_dim,
    ), f"the trainable module's forward must return a [{len(psmiles)}, dim] tensor"
    assert bool(torch.isfinite(out).all()), "the trainable module returned non-finite values"
    module.zero_grad()
    out.float().square().mean().backward()
    reached = [p for p in trainable if p.grad is not None and bool(p.grad.abs().sum() > 0)]
    assert reached, "no gradient reaches the trainable module's parameters"
    module.zero_grad()
    module.eval()


def check_encoder_plugin(
    registration: EncoderPlugin,
    settings: Mapping[str, Any] | None = None,
    psmiles: Sequence[str] | None = None,
    bad_psmiles: str | None = BAD_PSMILES,
) -> np.ndarray:
    """:func:`check_registration`, then :func:`check_encoder`, writing no files outside a
    working directory."""
    assert isinstance(registration, EncoderPlugin), (
        f"expected an EncoderPlugin, got {type(registration).__name__}"
    )
    with confined("encode"):
        encoder = check_registration(registration, settings)
        return check_encoder(encoder, psmiles, bad_psmiles)
