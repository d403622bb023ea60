"""polyBERT fingerprints of polymer repeat units, with LoRA adapters trained by the surrogate.

polyBERT (Kuenneth & Ramprasad 2023, Nat. Commun. 14:4099) is a DeBERTa-v2 encoder (hidden
size 600, 12 layers, about 25M parameters) pre-trained on 100M PSMILES with a SentencePiece
tokenizer; its authors pool the last hidden states by the mean over tokens. The weights are
read from a local folder or the Hugging Face cache and never downloaded at run time.

With LoRA (Hu et al. 2022) the base weights stay frozen and rank-r updates of the attention
projections train with the surrogate. Each surrogate trains adapters of its own
(``trainable_module()`` is a new copy every call, its adapters initialised from torch's
generator), so that trainings in one process, as the train stage's main surrogate,
baselines, leave-polymer-out and search trials, neither start from nor overwrite each
other's adapters. ``encode`` gives the base model's fingerprints. A training batch of
thousands of rows holds a few dozen polymers, so each unique PSMILES is encoded once per
batch and gathered by the caller. The encoder's token-wise layers run on those PSMILES'
tokens laid end to end, without padding (packed_deberta.py), where the architecture allows
it.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hydraopt_plugins.encoders import PolyBertSettings, module_fingerprints
from hydraopt_plugins.encoders.packed_deberta import pack, packed_hidden_states, unsupported
from hydraopt_plugins.encoders.psmiles import parse_psmiles
from hydraopt_plugins.lane_dropout import use_lane_dropout

# Files whose bytes decide the embeddings (whichever of them the folder has).
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "spm.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


class WeightsNotFound(ValueError):
    """polyBERT's weights are not on this machine."""


def resolve_model_dir(model: str) -> Path:
    """The local folder of ``model`` (a folder, or a Hugging Face id in the local cache)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder
    how = (
        f"download them once on a machine with internet (`hf download {model} --local-dir "
        f"DIR`, or `huggingface-cli download {model}` into the Hugging Face cache), then set "
        '`model = "DIR"` in the [encoder] table, or keep the id and point HF_HOME at that '
        "cache"
    )
    if "/" not in model or model.startswith((".", "/", "~")):
        raise WeightsNotFound(f"encoder.model: no folder {model!r} ({how})")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise WeightsNotFound(
            f"encoder.model: the weights of {model!r} are not in the local Hugging Face cache "
            f"and hydraopt never downloads at run time: {how}"
        ) from None


class PolyBertModule(nn.Module):
    """``forward(psmiles) -> [n, hidden]`` fingerprints; trains only the LoRA adapters."""

    def __init__(self, tokenizer: Any, base: nn.Module, settings: PolyBertSettings) -> None:
        """``base``: a transformers model that this module owns (LoRA wraps its layers)."""
        super().__init__()
        self.settings = settings
        self.tokenizer = tokenizer
        base.requires_grad_(False)
        self.max_tokens = int(base.config.max_position_embeddings)
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        self._token_ids: dict[str, list[int]] = {}
        self.hidden_size = int(base.config.hidden_size)
        if settings.lora:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                r=settings.lora_rank,
                lora_alpha=settings.lora_alpha,
                lora_dropout=settings.lora_dropout,
                target_modules=list(settings.lora_targets),
                bias="none",
            )
            try:
                with warnings.catch_warnings():  # peft asks transformers a deprecated question
                    warnings.simplefilter("ignore", FutureWarning)
                    base = get_peft_model(base, config)
            except ValueError as exc:
                raise ValueError(f"encoder.lora_targets: {exc}") from None
            # peft casts an adapter's input to its weights' float32 before the dropout; under
            # autocast the product casts it back, so that cast only doubled the dropout's
            # bytes. The inputs here are float32, or autocast's dtype, which products take.
            for layer in base.modules():
                if hasattr(layer, "cast_input_dtype_enabled"):
                    layer.cast_input_dtype_enabled = False
        use_lane_dropout(base)  # torch's CPU dropout masks are a third of a LoRA step
        self.model = base
        # The padding-free forward pass where the architecture allows it, else transformers'.
        self.packing_unsupported = (
            unsupported(self._core()) if settings.token_packing else "token_packing is off"
        )

    def forward(self, psmiles: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        ids = [self._tokens(s) for s in psmiles]
        groups = _length_groups([len(i) for i in ids], self.settings.padding_waste)
        if self.packing_unsupported is None:
            return self._packed_forward(ids, groups, device)
        parts = []
        for group in groups:
            width = max(len(ids[i]) for i in group)
            input_ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for row, i in enumerate(group):
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            mask = mask.to(device)
            hidden = self.model(input_ids=input_ids.to(device), attention_mask=mask)
            parts.append(_pool(hidden.last_hidden_state, mask, self.settings.pooling))
        position = torch.empty(len(psmiles), dtype=torch.long)
        position[[i for group in groups for i in group]] = torch.arange(len(psmiles))
        return torch.cat(parts)[position.to(device)]

    def _packed_forward(
        self, ids: list[list[int]], groups: list[list[int]], device: torch.device
    ) -> torch.Tensor:
        batch = pack(ids, groups).to(device)
        hidden = packed_hidden_states(self._core(), batch)
        # Pooled from padded rows, as from transformers' output (no scattered sums, which a
        # GPU adds in any order).
        layout = batch.sequences
        pooled = _pool(layout.lay_out(hidden), layout.real, self.settings.pooling)
        return torch.empty_like(pooled).index_copy(0, batch.order, pooled)

    def _core(self) -> nn.Module:
        """The transformers model inside the LoRA wrapper (whose layers carry the adapters)."""
        return self.model.get_base_model() if self.settings.lora else self.model

    def _tokens(self, smiles: str) -> list[int]:
        """Token ids with the special tokens, computed once per PSMILES."""
        if smiles not in self._token_ids:
            parse_psmiles(smiles)  # a tokenizer reads anything; refuse what is no molecule
            ids = self.tokenizer(smiles)["input_ids"]
            if len(ids) > self.max_tokens:
                raise ValueError(
                    f"PSMILES {smiles!r} has {len(ids)} tokens, more than the encoder's "
                    f"{self.max_tokens} positions"
                )
            self._token_ids[smiles] = list(ids)
        return self._token_ids[smiles]

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The trained part: the LoRA weights (empty without LoRA)."""
        return {k: v for k, v in self.state_dict().items() if "lora_" in k}


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1)


def _length_groups(lengths: Sequence[int], waste: float) -> list[list[int]]:
    """Indices grouped by token length, each group's longest at most (1 + waste) times its
    shortest, so that padding stays bounded."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] <= (1 + waste) * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class PolyBertEncoder:
    def __init__(self, settings: PolyBertSettings) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        self.settings = settings
        folder = resolve_model_dir(settings.model)
        transformers_logging.disable_progress_bar()
        self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self._base = AutoModel.from_pretrained(folder, local_files_only=True)
        # The frozen base, for ``encode``: a fresh adapter adds nothing (LoRA starts at zero).
        self.module = PolyBertModule(
            self._tokenizer, self._base, settings.model_copy(update={"lora": False})
        )
        self.embedding_dim = self.module.hidden_size
        digest = hashlib.sha256(settings.model_dump_json(exclude={"model"}).encode())
        for name in MODEL_FILES:
            if (folder / name).is_file():
                digest.update(name.encode())
                digest.update(hashlib.sha256((folder / name).read_bytes()).digest())
        self.fingerprint = digest.hexdigest()
        self._frozen: dict[str, np.ndarray] = {}

    def encode(self, psmiles: Sequence[str]) -> np.ndarray:
        """The base model's fingerprints (without adapters), computed once per PSMILES."""
        unique = list(dict.fromkeys(psmiles))
        missing = [s for s in unique if s not in self._frozen]
        self._frozen.update(zip(missing, self._run(missing), strict=True))
        out = np.zeros((len(psmiles), self.embedding_dim), dtype=np.float32)
        for row, smiles in enumerate(psmiles):
            out[row] = self._frozen[smiles]
        return out

    def _run(self, psmiles: list[str]) -> np.ndarray:
        if not psmiles:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return module_fingerprints(self.module, psmiles)

    def trainable_module(self) -> PolyBertModule | None:
        """With LoRA, a new module for one surrogate to train: a copy of the frozen base with
        adapters initialised from torch's generator (so that a seeded training starts from
        the same ones); None without LoRA."""
        if not self.settings.lora:
            return None
        return PolyBertModule(self._tokenizer, copy.deepcopy(self._base), self.settings)
