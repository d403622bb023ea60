"""DeBERTa-v2's forward pass over a batch's tokens without padding.

transformers' ``DebertaV2Model`` takes a padded ``[sequences, longest, hidden]`` batch, so its
token-wise layers (the projections with their LoRA adapters, dropout, the layer norms and the
feed-forward block) compute the padding too, and each group of similar length is a pass of its
own through all the layers. Here those layers run once per layer on the packed
``[tokens, hidden]`` matrix of every sequence of the batch; only the attention, the one layer
that mixes tokens, lays a sequence's tokens out in rows again, padded within groups of similar
length and masked as transformers masks them. The modules and weights are the model's own
(LoRA adapters included) and every token gets the same arithmetic, so in fp32 the hidden
states are transformers' to rounding (tests/test_encoders.py); in training only the dropout
masks fall differently, having other shapes.

It covers transformers' default DeBERTa-v2 configuration, which polyBERT's pre-training
keeps but for the sizes (absolute position embeddings, no relative attention, no convolution
layer, no enhanced-mask-decoder steps). :func:`unsupported` reads the loaded model and names
what another configuration has; the caller then runs transformers' own forward pass.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class PaddedLayout:
    """Sequences laid out in padded rows again: for the attention, a group of similar length;
    for pooling, every sequence."""

    slots: torch.Tensor  # [sequences, width]: the packed row of each slot (padding: any row)
    real: torch.Tensor  # [sequences, width]: True where a slot holds a token
    real_slots: torch.Tensor  # the flat indices of the real slots, in packed order

    @classmethod
    def of(cls, lengths: torch.Tensor, starts: torch.Tensor) -> PaddedLayout:
        """The layout of the sequences of ``lengths`` tokens from packed rows ``starts``."""
        offsets = torch.arange(int(lengths.max()))
        real = offsets[None, :] < lengths[:, None]
        # Padding slots read the first sequence's first token; their results are masked out
        # or dropped, so their gradients are exact zeros (deterministic even where a GPU
        # adds them up in any order).
        slots = torch.where(real, starts[:, None] + offsets[None, :], starts[0])
        return cls(slots, real, real.reshape(-1).nonzero().squeeze(1))

    def lay_out(self, rows: torch.Tensor) -> torch.Tensor:
        """Packed ``rows [tokens, ...]`` as ``[sequences, width, ...]``."""
        return rows.index_select(0, self.slots.reshape(-1)).view(*self.slots.shape, -1)

    def to(self, device: torch.device) -> PaddedLayout:
        return PaddedLayout(self.slots.to(device), self.real.to(device), self.real_slots.to(device))


@dataclass(frozen=True)
class PackedBatch:
    """Token sequences laid end to end, in the order of their attention groups."""

    token_ids: torch.Tensor  # [tokens]
    positions: torch.Tensor  # [tokens], each token's position in its sequence
    order: torch.Tensor  # [sequences], the input index of each packed sequence
    groups: tuple[PaddedLayout, ...]  # the attention's groups of similar length
    sequences: PaddedLayout  # every sequence, padded to the longest

    def to(self, device: torch.device) -> PackedBatch:
        return PackedBatch(
            self.token_ids.to(device),
            self.positions.to(device),
            self.order.to(device),
            tuple(group.to(device) for group in self.groups),
            self.sequences.to(device),
        )


def pack(ids: Sequence[Sequence[int]], groups: Sequence[Sequence[int]]) -> PackedBatch:
    """Pack the token ids ``ids`` (one list per sequence) in the order of ``groups`` (lists of
    sequence indices, each group padded to its longest sequence in the attention)."""
    order = [i for group in groups for i in group]
    lengths = torch.tensor([len(ids[i]) for i in order])
    starts = torch.cumsum(lengths, 0) - lengths
    bounds = torch.cumsum(torch.tensor([0] + [len(group) for group in groups]), 0).tolist()
    return PackedBatch(
        token_ids=torch.tensor([token for i in order for token in ids[i]], dtype=torch.long),
        positions=torch.cat([torch.arange(int(n)) for n in lengths]),
        order=torch.tensor(order, dtype=torch.long),
        groups=tuple(
            PaddedLayout.of(lengths[first:last], starts[first:last])
            for first, last in itertools.pairwise(bounds)
        ),
        sequences=PaddedLayout.of(lengths, starts),
    )


def unsupported(model: nn.Module) -> str | None:
    """Why :func:`packed_hidden_states` cannot run ``model`` (None: it can)."""
    from transformers import DebertaV2Model

    if not isinstance(model, DebertaV2Model):
        return f"the model is a {type(model).__name__}, not a DebertaV2Model"
    if model.encoder.relative_attention:
        return "the model uses relative attention"
    if model.encoder.conv is not None:
        return "the model has a convolution layer"
    if getattr(model, "z_steps", 0) > 1:
        return "the model repeats its last layer (z_steps)"
    return None


def packed_hidden_states(model: nn.Module, batch: PackedBatch) -> torch.Tensor:
    """The last hidden state of every token of ``batch``, ``[tokens, hidden]``, as
    ``model(input_ids, attention_mask)`` computes it for the same sequences padded."""
    embeddings = model.embeddings
    x = embeddings.word_embeddings(batch.token_ids)
    if embeddings.position_embeddings is not None and embeddings.position_biased_input:
        x = x + embeddings.position_embeddings(batch.positions)
    if embeddings.token_type_embeddings is not None:  # one segment: type 0 throughout
        # Called, not read: a LoRA adapter may wrap it.
        x = x + embeddings.token_type_embeddings(torch.zeros_like(batch.token_ids))
    if embeddings.embed_proj is not None:
        x = embeddings.embed_proj(x)
    # transformers multiplies by the padding mask here; every packed token is real.
    x = embeddings.dropout(embeddings.LayerNorm(x))
    for layer in model.encoder.layer:
        attention = layer.attention.self
        # Under autocast the layer's input (a layer norm's, so float32) is cast once for its
        # three projections and their adapters, not once for each of the six products.
        shared = _autocast_input(x)
        context = _attention(
            attention,
            _linear(attention.query_proj, shared),
            _linear(attention.key_proj, shared),
            _linear(attention.value_proj, shared),
            batch.groups,
        )
        attended = _output(layer.attention.output, context, x)
        intermediate = layer.intermediate
        x = _output(
            layer.output,
            intermediate.intermediate_act_fn(_linear(intermediate.dense, attended)),
            attended,
        )
    return x


def _output(block: nn.Module, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """DeBERTa-v2's self-output and output blocks: dense, dropout, then the layer norm of the
    sum with the residual, as transformers' ``forward(hidden, residual)`` computes them."""
    return block.LayerNorm(block.dropout(_linear(block.dense, hidden)) + residual)


def _linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for a linear layer or peft's LoRA wrapper of one. An adapter's update
    (``scaling * B(A(dropout(x)))``) is added inside its product with B (``addmm``), where
    peft's forward pass scales B's output and adds it to the base's in two more passes over
    the ``[tokens, out]`` matrix, forward and backward: about a tenth of the encoder's LoRA
    step on 2 CPU cores (benchmarks/RESULTS.md). The same arithmetic, rounded once."""
    parts = _plain_lora(module)
    if parts is None:
        return module(x)
    base, adapters = parts
    out = base(x)
    for lora_a, lora_b, dropout, scaling in adapters:
        out = torch.addmm(out, lora_a(dropout(x)), lora_b.weight.t(), alpha=scaling)
    return out


def _plain_lora(module: nn.Module) -> tuple[nn.Module, list[tuple[Any, ...]]] | None:
    """A peft LoRA linear layer's base layer and its active adapters (A, B, dropout,
    scaling), where they are plain LoRA: not merged, no DoRA or other variant, no bias on
    the adapters; else None (the module's own forward pass runs)."""
    try:
        from peft.tuners.lora import Linear as LoraLinear
    except ImportError:  # pragma: no cover - peft is a dependency
        return None
    if not isinstance(module, LoraLinear) or module.merged or module.disable_adapters:
        return None
    adapters = []
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue
        variant = name in getattr(module, "lora_variant", {})
        dora = getattr(module, "use_dora", {}).get(name, False)
        lora_a, lora_b = module.lora_A[name], module.lora_B[name]
        if variant or dora or lora_a.bias is not None or lora_b.bias is not None:
            return None
        adapters.append((lora_a, lora_b, module.lora_dropout[name], module.scaling[name]))
    return module.base_layer, adapters


def _autocast_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the autocast dtype of its device where autocast is on (the dtype every
    product it enters runs in); else ``x``."""
    device = x.device.type
    if not torch.is_autocast_enabled(device) or not x.is_floating_point():
        return x
    return x.to(torch.get_autocast_dtype(device))


def _attention(
    attention: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    groups: tuple[PaddedLayout, ...],
) -> torch.Tensor:
    """Scaled dot-product attention within each sequence, as transformers' disentangled
    self-attention computes it without relative positions; returns packed rows."""
    heads = attention.num_attention_heads
    # transformers scales by the head size times one plus the position terms it names, even
    # where relative attention is off.
    scale_factor = 1 + ("c2p" in attention.pos_att_type) + ("p2c" in attention.pos_att_type)
    packed = []
    for group in groups:
        q, k, v = (
            group.lay_out(rows).unflatten(-1, (heads, -1)).transpose(1, 2)
            for rows in (query, key, value)
        )
        # A CPU scalar in q's precision, as transformers rounds it (sqrt(50) is 7.0625 in
        # bf16); on a GPU a CPU scalar costs no copy to the device.
        scale = torch.tensor(math.sqrt(q.size(-1) * scale_factor)).to(q.dtype)
        scores = q @ (k.transpose(-1, -2) / scale)
        # Padding keys are masked out; padding queries are computed and dropped below.
        scores = scores.masked_fill(~group.real[:, None, None, :], torch.finfo(scores.dtype).min)
        weights = attention.dropout(torch.softmax(scores, dim=-1))
        context = (weights @ v).transpose(1, 2).flatten(0, 1).flatten(1)
        packed.append(context.index_select(0, group.real_slots))
    return torch.cat(packed)
