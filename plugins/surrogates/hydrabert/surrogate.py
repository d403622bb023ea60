"""The ``hydrabert`` surrogate object: fit, save, load and predict with uncertainty.

Predictions carry two kinds of uncertainty: the heteroscedastic heads' predicted noise
(aleatoric) and the spread of MC-dropout samples (epistemic, Gal & Ghahramani 2016); a
regression output's standard deviation is sqrt(mean of the predicted variances + variance of
the sampled means). A classification output's prediction is the mean sampled probability and
its standard deviation the samples' spread.

With ``ensemble_members`` above 1 the surrogate is a deep ensemble (Lakshminarayanan et al.
2017): that many networks trained alike from their own seeds, whose samples pool into one
mixture, so that their disagreement is part of the epistemic spread.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, nullcontext
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import safetensors
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from hydraopt.domain import (
    Outcomes,
    OutputSpec,
    PolymerInput,
    Predictions,
    SurrogateDomain,
    SurrogateInputs,
    TrainingData,
)
from hydraopt.plugin_types import Encoder
from hydraopt_plugins.encoders import module_fingerprints
from hydraopt_plugins.surrogates import HydraBertSettings
from hydraopt_plugins.surrogates.hydrabert.losses import TaskWeighting, fit_platt
from hydraopt_plugins.surrogates.hydrabert.mc_dropout import SampledNetworks
from hydraopt_plugins.surrogates.hydrabert.network import HydraBertNetwork
from hydraopt_plugins.surrogates.hydrabert.scaling import (
    Standardiser,
    log_features,
    logged_features,
)
from hydraopt_plugins.surrogates.hydrabert.scorer import HydraBertScorer, summarise
from hydraopt_plugins.surrogates.hydrabert.training import (
    TORCH_SEED_RANGE,
    LossModel,
    PolymerEmbedding,
    Rows,
    autocast_dtype,
    pick_device,
    train,
)

FORMAT = "hydraopt-hydrabert/1"
# Settings that change how predictions are computed, not the fitted model: a saved surrogate
# loads with other values of them (fewer MC samples for screening millions, say).
INFERENCE_SETTINGS = ("mc_samples", "predict_batch_size", "device", "threads", "precision")
# Settings that leave each ensemble member's training as it is: a checkpoint of a member
# resumes whatever the number of members (an ensemble grows without retraining).
MEMBER_INDEPENDENT_SETTINGS = ("ensemble_members",)
METADATA = "surrogate.json"
WEIGHTS = "model.safetensors"  # the first member's; member k's (from 2) in model-k.safetensors


class HydraBertSurrogate:
    def __init__(self, settings: HydraBertSettings) -> None:
        self.settings = settings
        self.outputs: tuple[OutputSpec, ...] = ()
        self.device = pick_device(settings.device)
        if settings.threads:
            torch.set_num_threads(settings.threads)
        # The ensemble's members (one network unless ensemble_members says more).
        self._members: list[LossModel] = []
        self._encoder: Encoder | None = None
        self._meta: dict[str, Any] = {}
        # Fingerprints by (member, PSMILES): with LoRA each member adapts its own encoder.
        self._embedding_cache: dict[tuple[int, str], np.ndarray] = {}

    # ---- training ---------------------------------------------------------------------------

    def fit(
        self,
        train_data: TrainingData,
        validation: TrainingData,
        encoder: Encoder,
        workdir: Path,
        seed: int = 0,
        report: Callable[[str], None] | None = None,
    ) -> Mapping[str, float]:
        self._check_heads(train_data)
        self._encoder, self._embedding_cache = encoder, {}
        logged = logged_features(self.settings.design_scale)
        features = log_features(train_data.inputs.features, logged)
        targets = {
            name: Standardiser.fit(np.asarray(train_data.targets[name], dtype=np.float64))
            for name, head in self.settings.heads.items()
            if head.kind != "classification"
        }
        pos_weight = {
            name: _positive_weight(train_data.targets[name], name)
            for name, head in self.settings.heads.items()
            if head.kind == "classification"
        }
        self._meta = {
            "format": FORMAT,
            "seed": seed,
            "settings": self.settings.model_dump(mode="json"),
            "encoder": encoder.fingerprint,
            "embedding_dim": encoder.embedding_dim,
            "features": Standardiser.fit(features).to_json(),
            "log10_features": sorted(logged),
            "targets": {name: s.to_json() for name, s in targets.items()},
            "pos_weight": pos_weight,
            "outputs": [_spec_json(train_data.spec(name)) for name in self.settings.heads],
            "domain": _domain_json(SurrogateDomain.of(train_data)),
        }
        self.outputs = tuple(train_data.spec(name) for name in self.settings.heads)
        polymers = (*train_data.inputs.polymers, *validation.inputs.polymers)
        psmiles = list(dict.fromkeys(p.psmiles for p in polymers))
        rows_train = self._rows(train_data, psmiles)
        rows_validation = self._rows(validation, psmiles)
        # The resolved precision too: 'auto' means bf16 on one CPU and fp32 on another, and
        # a checkpoint is resumed only by a training that computes as it did.
        identity = hashlib.sha256(
            json.dumps(_member_meta(self._meta), sort_keys=True).encode()
            + _data_digest(train_data).encode()
            + _data_digest(validation).encode()
            + str(autocast_dtype(self.device, self.settings.precision)).encode()
        ).hexdigest()
        say = report or (lambda line: None)
        count = self.settings.ensemble_members
        self._members, histories = [], []
        for member in range(count):
            torch.manual_seed(_member_seed(seed, member))  # the initial weights
            model = self._build(psmiles)
            if model.network.numeric_embedding is not None:
                model.network.numeric_embedding.fit_range(rows_train.features)
            folder = workdir if member == 0 else workdir / f"member-{member + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            prefix = f"member {member + 1}/{count}: " if count > 1 else ""
            histories.append(
                train(
                    model,
                    rows_train,
                    rows_validation,
                    self.settings,
                    _member_seed(seed, member),
                    folder,
                    identity if member == 0 else f"{identity}/member-{member + 1}",
                    lambda line, prefix=prefix: say(prefix + line),
                )
            )
            self._members.append(model)
        self._meta["history"] = _joined_histories(histories)
        self._meta["std_scale"], self._meta["platt"] = self._calibration(validation)
        best = [min(h["validation_loss"] for h in history) for history in histories]
        return {
            "validation_loss": float(np.mean(best)),
            "epochs": float(np.mean([len(history) for history in histories])),
        }

    def _calibration(
        self, validation: TrainingData
    ) -> tuple[dict[str, float], dict[str, list[float]]]:
        """Fitted on the validation patients after training.

        Regression outputs: the factor on the predicted standard deviation that makes the
        normal interval at ``calibration_level`` hold that share of the validation targets:
        the level's empirical quantile of |z| = |y - mu| / sigma over the normal quantile
        (quantile recalibration, Kuleshov et al. 2018, with the scale as its one parameter,
        as in conformalised scaled residuals, Angelopoulos & Bates 2023). A head's noise is
        learned on its training patients and understates the error on new ones; MC dropout
        covers part of the gap, this factor the rest. The factor that maximises the
        Gaussian likelihood instead (sigma scaling, s^2 = mean z^2) is pulled by the heavy
        tails of treatment effects and over-widened the 90 % intervals of delta-EF to hold
        99 % of the targets (benchmarks/RESULTS.md).

        Classification outputs: Platt scaling (Platt 1999), p = sigmoid(a * logit + b) fitted
        by logistic regression (``fit_platt``, which also selects the epoch). The positive
        weight and focal loss that help a rare class train also bias the probabilities; after
        scaling they are probabilities again, and 0.5 is the threshold that maximises
        accuracy.
        """
        self._meta["std_scale"], self._meta["platt"] = {}, {}
        predicted = self.predict(validation.inputs)
        scales: dict[str, float] = {}
        platt: dict[str, list[float]] = {}
        for name, head in self.settings.heads.items():
            target = np.asarray(validation.targets[name], dtype=np.float64)
            if head.kind == "classification":
                ok = np.isfinite(target)
                if len(np.unique(target[ok])) < 2:
                    continue
                probability = np.clip(predicted[name][ok], 1e-7, 1 - 1e-7)
                logit = torch.from_numpy(np.log(probability / (1 - probability)))
                platt[name] = list(fit_platt(logit, torch.from_numpy(target[ok])))
                continue
            std = predicted.std[name]
            ok = np.isfinite(target) & (std > 0)
            if ok.any():
                z = np.abs(target[ok] - predicted[name][ok]) / std[ok]
                level = self.settings.calibration_level
                normal_quantile = NormalDist().inv_cdf(0.5 + level / 2)
                scales[name] = float(np.quantile(z, level) / normal_quantile)
        return scales, platt

    @property
    def history(self) -> list[dict[str, Any]]:
        """Each epoch's losses; in an ensemble each record names its ``member`` (from 1)."""
        return list(self._meta.get("history", []))

    def _check_heads(self, data: TrainingData) -> None:
        for name, head in self.settings.heads.items():
            if name not in data.targets:
                raise ValueError(
                    f"surrogate.heads.{name}: the dataset has no output {name!r} (outputs: "
                    f"{', '.join(sorted(data.targets))})"
                )
            shape = data.spec(name).shape
            if (head.kind == "sequence") != bool(shape):
                want = "a trajectory" if head.kind == "sequence" else "a scalar"
                raise ValueError(
                    f"surrogate.heads.{name}: a {head.kind} head needs {want} output; "
                    f"{name!r} has shape {shape}"
                )

    def _build(self, psmiles: list[str]) -> LossModel:
        """A member: the network, task weighting and polymer embedding over ``psmiles`` (the
        distinct repeat units that training rows refer to), initialised from torch's
        generator."""
        assert self._encoder is not None
        steps = {
            spec["name"]: int(spec["shape"][0]) if spec["shape"] else 1
            for spec in self._meta["outputs"]
        }
        network = HydraBertNetwork(
            self.settings, len(self._meta["features"]["mean"]), self._meta["embedding_dim"], steps
        )
        module = self._encoder.trainable_module()
        frozen = None if module is not None else torch.from_numpy(self._encoder.encode(psmiles))
        embedding = PolymerEmbedding(psmiles, frozen, module)
        beta = {
            name: head.huber_beta / float(np.mean(self._meta["targets"][name]["std"]))
            for name, head in self.settings.heads.items()
            if head.kind != "classification"
        }
        weighting = TaskWeighting(
            self.settings.heads, self.settings.task_weighting == "uncertainty"
        )
        return LossModel(
            network, embedding, weighting, self.settings.heads, beta, self._meta["pos_weight"]
        ).to(self.device)

    def _scaled_features(self, features: np.ndarray) -> np.ndarray:
        """The features as the network takes them: the saved log10 ones logged, standardised."""
        logged = log_features(features, frozenset(self._meta["log10_features"]))
        return Standardiser.from_json(self._meta["features"]).forward(logged)

    def _rows(self, data: TrainingData, psmiles: list[str]) -> Rows:
        """Scaled tensors on the device; polymers index ``psmiles``, the embedding's list."""
        features = self._scaled_features(data.inputs.features)
        targets: dict[str, torch.Tensor] = {}
        valid: dict[str, torch.Tensor] = {}
        for name, head in self.settings.heads.items():
            values = np.asarray(data.targets[name], dtype=np.float64)
            if head.kind != "classification":
                values = Standardiser.from_json(self._meta["targets"][name]).forward(values)
            finite = np.isfinite(values)
            targets[name] = torch.from_numpy(np.where(finite, values, 0.0).astype(np.float32))
            valid[name] = torch.from_numpy(finite)
        return Rows(
            features=torch.from_numpy(features.astype(np.float32)),
            polymer=torch.from_numpy(_embedding_rows(data.inputs, psmiles)),
            category=torch.tensor([p.category_index for p in data.inputs.polymers])[
                torch.from_numpy(data.inputs.polymer_index.astype(np.int64))
            ],
            targets=targets,
            valid=valid,
        ).to(self.device)

    # ---- persistence ------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        if not self._members:
            raise RuntimeError("save() before fit() or load()")
        for member, model in enumerate(self._members):
            state = {k: v.contiguous().cpu() for k, v in model.state_dict().items()}
            state.pop("embedding.frozen", None)  # recomputed from the encoder on load
            save_file(state, str(directory / _weights_file(member)))
        (directory / METADATA).write_text(json.dumps(self._meta, indent=1, sort_keys=True))

    def load(self, directory: Path, encoder: Encoder) -> None:
        path = directory / METADATA
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a saved hydrabert surrogate ({exc})") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        mine = self.settings.model_dump(mode="json", exclude=set(INFERENCE_SETTINGS))
        if _trained_settings(meta["settings"]) != mine:
            raise ValueError(
                f"{path}: saved with other surrogate settings than this pipeline's "
                "(retrain, or configure the surrogate as it was trained)"
            )
        if meta["encoder"] != encoder.fingerprint:
            raise ValueError(
                f"{path}: trained with another polymer encoder (or other weights) than this "
                "pipeline's; retrain, or configure the encoder it was trained with"
            )
        self._meta, self._encoder, self._embedding_cache = meta, encoder, {}
        self.outputs = tuple(_spec_from_json(s) for s in meta["outputs"])
        self._members = []  # unusable until every member's weights have loaded
        members = []
        for member in range(self.settings.ensemble_members):
            model = self._build([])
            path = directory / _weights_file(member)
            try:
                weights = load_file(str(path), device=str(self.device))
            except (OSError, safetensors.SafetensorError) as exc:
                raise ValueError(f"{path}: cannot read this member's weights ({exc})") from None
            missing, unexpected = model.load_state_dict(weights, strict=False)
            if unexpected or [k for k in missing if k != "embedding.frozen"]:
                raise ValueError(f"{path}: weights do not match the network")
            members.append(model)
        self._members = members

    # ---- prediction -------------------------------------------------------------------------

    def predict(self, inputs: SurrogateInputs) -> Predictions:
        if not self._members or self._encoder is None:
            raise RuntimeError("predict() before fit() or load()")
        features = torch.from_numpy(self._scaled_features(inputs.features).astype(np.float32))
        # Polymers in PSMILES order, whatever order the inputs list them in.
        distinct = sorted({p.psmiles for p in inputs.polymers})
        position = np.array([distinct.index(p.psmiles) for p in inputs.polymers], dtype=np.int64)
        embeddings = [
            torch.from_numpy(self._embeddings(member, distinct))
            for member in range(len(self._members))
        ]
        polymer = torch.from_numpy(position[inputs.polymer_index])
        category = torch.from_numpy(
            np.array([p.category_index for p in inputs.polymers], dtype=np.int64)[
                inputs.polymer_index
            ]
        )
        samples = self.settings.mc_samples
        dtype = autocast_dtype(self.device, self.settings.precision)
        # MC dropout as sampled networks: each draw's masks are fixed by the seed, so a row's
        # prediction depends neither on the other rows nor on how they are chunked. An
        # ensemble's members' draws pool into one mixture.
        for model in self._members:
            model.eval()
        samplers = [
            SampledNetworks(model.network, _member_seed(self._meta["seed"], member))
            for member, model in enumerate(self._members)
        ]
        parts: dict[str, list[np.ndarray]] = {}
        spreads: dict[str, list[np.ndarray]] = {}
        with torch.no_grad(), ExitStack() as sampling:
            if samples > 1:
                for sampler in samplers:
                    sampling.enter_context(sampler.active())
            for start in range(0, len(inputs), self.settings.predict_batch_size):
                rows = slice(start, start + self.settings.predict_batch_size)
                draws = []
                for model, sampler, embedding in zip(
                    self._members, samplers, embeddings, strict=True
                ):
                    for draw in range(samples):
                        sampler.draw = draw
                        draws.append(
                            self._forward(
                                model,
                                features[rows],
                                embedding,
                                polymer[rows],
                                category[rows],
                                dtype,
                            )
                        )
                for name, (mean, std) in self._summarise(draws).items():
                    parts.setdefault(name, []).append(mean)
                    spreads.setdefault(name, []).append(std)
        values = {name: _joined(parts.get(name), len(inputs), spec) for name, spec in self._named()}
        std = {name: _joined(spreads.get(name), len(inputs), spec) for name, spec in self._named()}
        return Predictions(Outcomes(self.outputs, values), std)

    def _embeddings(self, member: int, psmiles: list[str]) -> np.ndarray:
        """Member ``member``'s encoder fingerprints, computed once per PSMILES: the trained
        weights are fixed. A frozen encoder's are shared by every member."""
        assert self._encoder is not None
        key = member if self._members[member].embedding.encoder is not None else -1
        cache = self._embedding_cache
        missing = [s for s in dict.fromkeys(psmiles) if (key, s) not in cache]
        if missing:
            encoded = self._encode(member, missing)
            cache.update(((key, s), e) for s, e in zip(missing, encoded, strict=True))
        width = self._meta["embedding_dim"]
        out = np.zeros((len(psmiles), width), dtype=np.float32)
        for row, smiles in enumerate(psmiles):
            out[row] = cache[key, smiles]
        return out

    def _encode(self, member: int, psmiles: list[str]) -> np.ndarray:
        """Fingerprints from the member's own trained encoder module (LoRA adapters) where
        it has one, in evaluation mode; else the encoder's frozen ones."""
        assert self._encoder is not None
        module = self._members[member].embedding.encoder
        if module is None:
            return self._encoder.encode(psmiles)
        return module_fingerprints(module, psmiles)

    def _named(self) -> list[tuple[str, OutputSpec]]:
        return [(spec.name, spec) for spec in self.outputs]

    def _forward(self, model, features, embedding, polymer, category, dtype) -> dict[str, Any]:
        polymers, inverse = torch.unique(polymer, return_inverse=True)
        device = self.device
        context = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
        with context:
            out = model.network(
                features.to(device),
                embedding[polymers].to(device),
                inverse.to(device),
                category.to(device),
            )
        return {name: value.float().cpu() for name, value in out.items()}

    def _summarise(self, draws: list[dict[str, torch.Tensor]]) -> dict[str, tuple[Any, Any]]:
        """Per output, the prediction and its standard deviation in the output's unit."""
        summary = summarise(draws, self.settings.heads, self._members[0].network, self._meta)
        return {name: (mean.numpy(), std.numpy()) for name, (mean, std) in summary.items()}

    # ---- for agents: the frozen surrogate on tensors, and what it was trained on -----------

    def tensor_scorer(self, polymers: Sequence[PolymerInput]) -> HydraBertScorer:
        """The fitted network (every member of an ensemble) as a function on tensors over
        ``polymers`` (indexed by position), their embeddings computed once."""
        if not self._members:
            raise RuntimeError("tensor_scorer() before fit() or load()")
        psmiles = [p.psmiles for p in polymers]
        embeddings = [self._embeddings(member, psmiles) for member in range(len(self._members))]
        dtype = autocast_dtype(self.device, self.settings.precision)
        return HydraBertScorer(
            [model.network for model in self._members],
            self.settings.heads,
            self._meta,
            self.outputs,
            polymers,
            embeddings,
            self.device,
            dtype,
        )

    @property
    def training_domain(self) -> SurrogateDomain | None:
        """The training polymers and feature ranges (None for a model saved before they
        were recorded)."""
        domain = self._meta.get("domain")
        if domain is None:
            return None
        ranges = {name: (low, high) for name, (low, high) in domain["feature_ranges"].items()}
        return SurrogateDomain(frozenset(domain["psmiles"]), ranges)


def _trained_settings(saved: Mapping[str, Any]) -> dict[str, Any] | None:
    """The settings a surrogate was trained with, as this version reads them: a setting
    added since, which is absent, takes its default (which trains as before it existed).
    None if this version cannot read them."""
    try:
        settings = HydraBertSettings.model_validate_json(json.dumps(saved))
    except ValidationError:
        return None
    return settings.model_dump(mode="json", exclude=set(INFERENCE_SETTINGS))


def _member_seed(seed: int, member: int) -> int:
    """Member ``member``'s seed: the training's seed for the first, the next ones after."""
    return (seed + member) % TORCH_SEED_RANGE


def _member_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What a member's training depends on: the metadata less the ensemble's size."""
    settings = {k: v for k, v in meta["settings"].items() if k not in MEMBER_INDEPENDENT_SETTINGS}
    return {**meta, "settings": settings}


def _joined_histories(histories: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One member's history as it is; several members' one after another, each record
    naming its member (from 1)."""
    if len(histories) == 1:
        return histories[0]
    return [
        {"member": member, **record}
        for member, history in enumerate(histories, start=1)
        for record in history
    ]


def _weights_file(member: int) -> str:
    """Member ``member``'s (from 0) weights: the first's as a lone network's, then
    model-2.safetensors and on."""
    return WEIGHTS if member == 0 else f"model-{member + 1}.safetensors"


def _embedding_rows(inputs: SurrogateInputs, psmiles: list[str]) -> np.ndarray:
    """Each row's polymer as its position in ``psmiles``."""
    position = {s: i for i, s in enumerate(psmiles)}
    of_polymer = np.array([position[p.psmiles] for p in inputs.polymers], dtype=np.int64)
    return of_polymer[inputs.polymer_index]


def _domain_json(domain: SurrogateDomain) -> dict[str, Any]:
    return {
        "psmiles": sorted(domain.psmiles),
        "feature_ranges": {name: list(r) for name, r in domain.feature_ranges.items()},
    }


def _joined(parts: list[np.ndarray] | None, n: int, spec: OutputSpec) -> np.ndarray:
    if not parts:
        return np.zeros((n, *spec.shape))
    return np.concatenate(parts).astype(np.float64).reshape(n, *spec.shape)


def _positive_weight(labels: np.ndarray, name: str) -> float:
    """Negatives per positive in the training split (seeds: 76/24 = 3.17)."""
    labels = np.asarray(labels, dtype=np.float64)
    positives = float(np.nansum(labels))
    negatives = float(np.sum(np.isfinite(labels))) - positives
    if positives == 0 or negatives == 0:
        which = "positive" if positives == 0 else "negative"
        raise ValueError(
            f"surrogate.heads.{name}: the training split has no {which} row, so there is one "
            "class to learn; choose dataset.is_optimal thresholds the outcomes separate"
        )
    return negatives / positives


def _data_digest(data: TrainingData) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(data.inputs.features).tobytes())
    digest.update(np.ascontiguousarray(data.inputs.polymer_index).tobytes())
    for name in sorted(data.targets):
        digest.update(np.ascontiguousarray(data.targets[name], dtype=np.float64).tobytes())
    return digest.hexdigest()


def _spec_json(spec: OutputSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "unit": spec.unit,
        "description": spec.description,
        "shape": list(spec.shape),
    }


def _spec_from_json(data: Mapping[str, Any]) -> OutputSpec:
    return OutputSpec(data["name"], data["unit"], data["description"], tuple(data["shape"]))
