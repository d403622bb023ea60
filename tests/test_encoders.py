"""Polymer encoders: Morgan count fingerprints, none, and polyBERT loaded from a folder in
polyBERT's layout (a tiny DeBERTa-v2 and a SentencePiece tokenizer built here, no download)."""

import numpy as np
import pytest

from hydraopt.registry import PluginRegistry
from hydraopt_plugins.encoders import MorganSettings, PolyBertSettings

PSMILES = [
    "[*]CCO[*]",
    "[*]c1sc([*])c2c1OCCO2",
    "[*]OC1C(CO)OC([*])C(N)C1O",
    "[*]NCC(=O)N1CCCC1C(=O)NC(CCCCNC(=O)C(C)=C)C(=O)[*]",
]


@pytest.fixture(scope="module")
def polybert_folder(tmp_path_factory):
    from hydraopt_plugins.encoders.polybert_untrained import write_untrained_polybert

    return write_untrained_polybert(tmp_path_factory.mktemp("polybert"), PSMILES * 5)


def test_morgan_counts_the_repeat_unit_and_names_a_bad_psmiles():
    from hydraopt_plugins.encoders.morgan import MorganEncoder

    encoder = MorganEncoder(MorganSettings(radius=2, fp_size=512))
    embedding = encoder.encode(PSMILES)
    assert embedding.shape == (4, 512) and embedding.dtype == np.float32
    # counts, not bits: PEG's repeat unit roots 3 environments per radius at its 3 atoms
    assert embedding[0].sum() == 3 * 3
    assert len({row.tobytes() for row in embedding}) == 4
    np.testing.assert_array_equal(encoder.encode([PSMILES[1]])[0], embedding[1])
    with pytest.raises(ValueError, match=r"RDKit cannot parse the PSMILES '\[\*\]CC\(\('"):
        encoder.encode(["[*]CC(("])


def test_the_none_encoder_has_no_width():
    registry = PluginRegistry.discover()
    settings = registry.get("encoder", "none").registration.settings()
    encoder = registry.create("encoder", "none", settings)
    assert encoder.encode(PSMILES).shape == (4, 0) and encoder.trainable_module() is None


def test_polybert_loads_a_local_folder_and_trains_only_lora(polybert_folder):
    from hydraopt_plugins.encoders.polybert import PolyBertEncoder

    encoder = PolyBertEncoder(PolyBertSettings(model=str(polybert_folder)))
    module = encoder.trainable_module()
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any("attention.output.dense" in n for n in trainable)
    assert not any("intermediate" in n for n in trainable)  # the feed-forward stays frozen
    module.train()
    module(PSMILES).pow(2).mean().backward()
    assert all(p.grad is not None for n, p in module.named_parameters() if n in trainable)
    frozen = [p for n, p in module.named_parameters() if n not in trainable]
    assert all(p.grad is None for p in frozen)
    # grouped by token length and gathered back: the same fingerprint as one at a time
    together = encoder.encode(PSMILES + PSMILES[:1])
    alone = np.stack([encoder.encode([s])[0] for s in PSMILES])
    np.testing.assert_allclose(together[:4], alone, atol=1e-5)
    np.testing.assert_array_equal(together[4], together[0])
    assert together.shape == (5, encoder.embedding_dim)


def test_each_polybert_training_gets_adapters_of_its_own(polybert_folder):
    """trainable_module() is a new copy each call, its adapters drawn from torch's generator:
    one training neither starts from nor changes another's, nor encode()'s fingerprints."""
    import torch

    from hydraopt_plugins.encoders.polybert import PolyBertEncoder

    encoder = PolyBertEncoder(PolyBertSettings(model=str(polybert_folder)))
    before = encoder.encode(PSMILES)
    torch.manual_seed(5)
    first = encoder.trainable_module()
    torch.manual_seed(5)
    second = encoder.trainable_module()
    assert first is not second
    adapters = {k: v.clone() for k, v in first.adapter_state().items()}
    assert adapters and all(torch.equal(v, second.adapter_state()[k]) for k, v in adapters.items())
    # a fresh adapter adds nothing (LoRA's B starts at zero): the base model's fingerprints
    first.eval()
    with torch.no_grad():
        np.testing.assert_allclose(first(PSMILES).numpy(), before, atol=1e-5)
    optimizer = torch.optim.SGD([p for p in first.parameters() if p.requires_grad], lr=1.0)
    first.train()
    for _ in range(2):  # B moves on the first step, A on the second
        optimizer.zero_grad()
        first(PSMILES).pow(2).mean().backward()
        optimizer.step()
    changed = first.adapter_state()
    assert not all(torch.equal(v, adapters[k]) for k, v in changed.items())
    assert all(torch.equal(v, second.adapter_state()[k]) for k, v in adapters.items())
    np.testing.assert_array_equal(encoder.encode(PSMILES), before)
    base = dict(encoder.module.named_parameters())
    trained = {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p
        for n, p in first.named_parameters()
        if "lora_" not in n
    }
    assert all(torch.equal(trained[name], p) for name, p in base.items())  # frozen stays frozen


def test_polybert_pooling_and_fingerprint_follow_the_settings(polybert_folder):
    from hydraopt_plugins.encoders.polybert import PolyBertEncoder

    mean = PolyBertEncoder(PolyBertSettings(model=str(polybert_folder), lora=False))
    cls = PolyBertEncoder(PolyBertSettings(model=str(polybert_folder), lora=False, pooling="cls"))
    assert mean.trainable_module() is None
    assert mean.fingerprint != cls.fingerprint
    assert not np.allclose(mean.encode(PSMILES), cls.encode(PSMILES))
    again = PolyBertEncoder(PolyBertSettings(model=str(polybert_folder), lora=False))
    assert again.fingerprint == mean.fingerprint


def test_missing_polybert_weights_say_how_to_get_them(tmp_path, monkeypatch):
    from hydraopt_plugins.encoders.polybert import WeightsNotFound, resolve_model_dir

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFound, match=r"hf download kuelumbus/polyBERT.*\[encoder\]"):
        resolve_model_dir("kuelumbus/polyBERT")
    with pytest.raises(WeightsNotFound, match="no folder"):
        resolve_model_dir(str(tmp_path / "nowhere"))


def test_lane_dropout_keeps_each_element_with_probability_one_minus_p():
    import torch

    from hydraopt_plugins.lane_dropout import LaneDropout, keep_mask

    torch.manual_seed(0)
    mask = keep_mask(torch.Size([400, 1000]), 0.1)
    # every one of the four lanes of a draw, not only the whole: a lane whose sign bit never
    # varied would keep all its elements (4 sigma of 100,000 draws is 0.0038)
    for lane in range(4):
        assert abs(mask.flatten()[lane::4].float().mean().item() - 0.9) < 0.004
    # independent neighbours: the pair (kept, kept) as often as 0.9 * 0.9
    pairs = (mask.flatten()[:-1] & mask.flatten()[1:]).float().mean().item()
    assert abs(pairs - 0.81) < 0.004
    torch.manual_seed(0)
    assert torch.equal(keep_mask(torch.Size([400, 1000]), 0.1), mask)  # the generator's state
    assert not torch.equal(keep_mask(torch.Size([400, 1000]), 0.1), mask)  # each mask anew

    dropout = LaneDropout(0.25)
    x = torch.full((50, 40), 2.0, requires_grad=True)
    y = dropout(x)
    assert y.unique().tolist() == pytest.approx([0.0, 2.0 / 0.75])
    y.sum().backward()
    # the gradient passes the kept elements, scaled, and stops at the dropped ones
    torch.testing.assert_close(x.grad, (y > 0).float() / 0.75)
    # in bf16 and fp16 the kept elements are x / (1 - p) rounded once, not x times a rounded
    # scale, and the gradient is the scale where kept, 0 where dropped
    for dtype in (torch.bfloat16, torch.float16):
        values = torch.linspace(1, 2, 4000).to(dtype).requires_grad_()
        half = LaneDropout(0.1)(values)
        assert half.dtype == dtype
        kept = half != 0
        assert abs(kept.float().mean().item() - 0.9) < 0.02
        assert torch.equal(half[kept], (values[kept].float() / 0.9).to(dtype))
        half.float().sum().backward()
        scale = torch.tensor(1 / 0.9).to(dtype)
        assert torch.equal(values.grad, torch.where(kept, scale, torch.zeros((), dtype=dtype)))
    dropout.eval()
    assert torch.equal(dropout(x), x)


def test_polybert_draws_its_training_dropout_from_lanes(polybert_folder):
    import torch

    from hydraopt_plugins.encoders.polybert import PolyBertEncoder
    from hydraopt_plugins.lane_dropout import LaneDropout

    encoder = PolyBertEncoder(PolyBertSettings(model=str(polybert_folder), lora_dropout=0.3))
    module = encoder.trainable_module()
    dropouts = [m for m in module.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(type(m) is LaneDropout for m in dropouts)
    assert 0.3 in {m.p for m in dropouts}  # LoRA's, as configured
    module.train()
    torch.manual_seed(1)
    first = module(PSMILES)
    torch.manual_seed(1)
    assert torch.equal(module(PSMILES), first)
    assert not torch.equal(module(PSMILES), first)


@pytest.mark.parametrize(("pooling", "padding_waste"), [("mean", 0.5), ("cls", 2.0)])
def test_polybert_packed_tokens_compute_what_transformers_computes(
    polybert_folder, pooling, padding_waste
):
    import torch

    from hydraopt_plugins.encoders.polybert import PolyBertEncoder

    def module(token_packing: bool):
        settings = PolyBertSettings(
            model=str(polybert_folder),
            pooling=pooling,
            padding_waste=padding_waste,
            token_packing=token_packing,
        )
        return PolyBertEncoder(settings).trainable_module()

    packed, padded = module(True), module(False)
    assert packed.packing_unsupported is None
    assert padded.packing_unsupported == "token_packing is off"
    # the packed pass adds each adapter inside its product with B, not through peft's forward
    # pass; a merged adapter (or DoRA, or an adapter bias) goes through peft's
    from hydraopt_plugins.encoders.packed_deberta import _plain_lora

    wrapped = [m for n, m in packed._core().named_modules() if n.endswith("query_proj")]
    assert wrapped and all(_plain_lora(m) is not None for m in wrapped)
    wrapped[0].merge()
    assert _plain_lora(wrapped[0]) is None
    wrapped[0].unmerge()
    torch.manual_seed(0)  # adapters that change the output (LoRA starts as the identity)
    adapters = {k: 0.2 * torch.randn_like(v) for k, v in packed.adapter_state().items()}
    batch = PSMILES[::-1] + PSMILES[:2]  # out of length order, with repeats
    outputs, gradients = [], []
    for encoder in (packed, padded):
        encoder.load_state_dict(adapters, strict=False)
        encoder.eval()  # no dropout: the two passes draw their masks in other shapes
        out = encoder(batch)
        out.pow(2).sum().backward()
        outputs.append(out.detach())
        gradients.append({n: p.grad for n, p in encoder.named_parameters() if p.requires_grad})
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    assert gradients[0].keys() == gradients[1].keys() and gradients[0]
    # In training both passes apply every dropout of the model (the embeddings', the
    # attention weights', the hidden states' and LoRA's).
    applied: list[set[str]] = []
    for encoder in (packed, padded):
        names: set[str] = set()
        hooks = [
            module.register_forward_hook(lambda *_, name=name, names=names: names.add(name))
            for name, module in encoder.named_modules()
            if isinstance(module, torch.nn.Dropout)
        ]
        encoder.train()
        encoder(batch)
        for hook in hooks:
            hook.remove()
        applied.append(names)
    assert applied[0] == applied[1] and any("lora_dropout" in n for n in applied[0])
    for name, gradient in gradients[1].items():
        # sums over tokens in another order: close to the gradient's own scale
        scale = gradient.abs().max().item()
        torch.testing.assert_close(gradients[0][name], gradient, rtol=0, atol=1e-5 * scale)


def test_polybert_runs_transformers_forward_where_packing_cannot(polybert_folder, tmp_path):
    import json
    import shutil

    import torch
    from transformers import DebertaV2Config, DebertaV2Model

    from hydraopt_plugins.encoders.packed_deberta import unsupported
    from hydraopt_plugins.encoders.polybert import PolyBertEncoder

    tiny = {"vocab_size": 20, "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 8}
    assert unsupported(DebertaV2Model(DebertaV2Config(num_hidden_layers=1, **tiny))) is None
    conv = DebertaV2Config(num_hidden_layers=1, conv_kernel_size=3, **tiny)
    assert unsupported(DebertaV2Model(conv)) == "the model has a convolution layer"
    assert unsupported(torch.nn.Linear(2, 2)) == "the model is a Linear, not a DebertaV2Model"
    folder = tmp_path / "relative"
    shutil.copytree(polybert_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=16)
    (folder / "config.json").write_text(json.dumps(config))
    encoder = PolyBertEncoder(PolyBertSettings(model=str(folder)))
    assert encoder.module.packing_unsupported == "the model uses relative attention"
    assert encoder.encode(PSMILES).shape == (4, encoder.embedding_dim)


@pytest.mark.parametrize(
    "config",
    [
        {"pos_att_type": ["c2p", "p2c"]},  # scales the attention even without relative terms
        {"type_vocab_size": 2, "embedding_size": 16},  # token types and the embedding projection
        {"position_biased_input": False, "hidden_act": "gelu_new"},
    ],
)
def test_packed_deberta_follows_the_configuration(config):
    import torch
    from transformers import DebertaV2Config, DebertaV2Model

    from hydraopt_plugins.encoders.packed_deberta import pack, packed_hidden_states, unsupported

    torch.manual_seed(0)
    sizes = {"hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64}
    model = DebertaV2Model(DebertaV2Config(vocab_size=40, num_hidden_layers=2, **sizes, **config))
    if model.embeddings.token_type_embeddings is not None:
        torch.nn.init.normal_(model.embeddings.token_type_embeddings.weight)
    model.eval()
    assert unsupported(model) is None
    ids = [[2, 5, 9, 3], [2, 7, 3], [2, 11, 12, 13, 14, 15, 3], [2, 8, 8, 3]]
    batch = pack(ids, [[1, 0, 3], [2]])
    packed = packed_hidden_states(model, batch)
    width = max(map(len, ids))
    input_ids = torch.tensor([seq + [0] * (width - len(seq)) for seq in ids])
    mask = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for seq in ids])
    with torch.no_grad():
        padded = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    rows = 0
    for sequence in batch.order.tolist():
        length = len(ids[sequence])
        torch.testing.assert_close(packed[rows : rows + length], padded[sequence, :length])
        rows += length
