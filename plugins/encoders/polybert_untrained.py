"""A randomly initialised encoder of polyBERT's architecture, written in polyBERT's layout.

For tests and benchmarks where the real weights cannot be downloaded: a SentencePiece
tokenizer trained on the given PSMILES and a DeBERTa-v2 model, saved as ``config.json``,
``model.safetensors``, ``spm.model`` and ``tokenizer_config.json``, the files of polyBERT's
Hugging Face repository, so :class:`PolyBertEncoder` loads it through the same code path.
Its fingerprints carry no chemistry: it measures cost and exercises the code, nothing else.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

# polyBERT's published configuration (config.json of kuelumbus/polyBERT).
POLYBERT_ARCHITECTURE = {
    "hidden_size": 600,
    "intermediate_size": 512,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
}
TINY_ARCHITECTURE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}
SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "bos_token": "[CLS]",
    "eos_token": "[SEP]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def write_untrained_polybert(
    folder: Path,
    psmiles: Sequence[str],
    architecture: dict[str, int] | None = None,
    max_piece_length: int = 2,
    seed: int = 0,
) -> Path:
    """Write a tokenizer trained on ``psmiles`` and an untrained DeBERTa-v2 into ``folder``.

    ``max_piece_length`` bounds the tokenizer's pieces (characters), so token counts stay
    near polyBERT's on strings it has not seen.
    """
    import sentencepiece as spm
    import torch
    from transformers import DebertaV2Config, DebertaV2Model

    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(psmiles)),
        model_writer=model,
        vocab_size=256,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        max_sentencepiece_length=max_piece_length,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        pad_piece="[PAD]",
        unk_piece="[UNK]",
        bos_piece="[CLS]",
        eos_piece="[SEP]",
        user_defined_symbols=["[MASK]"],
        minloglevel=2,
    )
    (folder / "spm.model").write_bytes(model.getvalue())
    config_text = {"tokenizer_class": "DebertaV2Tokenizer", "do_lower_case": False}
    (folder / "tokenizer_config.json").write_text(json.dumps({**config_text, **SPECIAL_TOKENS}))
    vocab = spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
    config = DebertaV2Config(
        vocab_size=vocab,
        max_position_embeddings=512,
        relative_attention=False,
        position_biased_input=True,
        pos_att_type=None,
        type_vocab_size=0,
        pad_token_id=0,
        **(architecture or TINY_ARCHITECTURE),
    )
    torch.manual_seed(seed)
    DebertaV2Model(config).save_pretrained(folder)
    return folder
