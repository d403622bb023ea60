"""What a surrogate is trained on: simulated outcomes of designs on patients, split by patient.

Validation is on held-out patients, never on held-out designs of training patients: a
surrogate must generalise to the next patient, and designs of one patient are correlated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hydraopt.domain.design import DesignBatch, DesignSpace
from hydraopt.domain.outcomes import Outcomes
from hydraopt.domain.patient import Cohort


@dataclass(frozen=True)
class TrainingData:
    """Per patient, its designs and their simulated outcomes (rows aligned).

    :param validation_ids: patients held out of training, to judge the fit on.
    """

    space: DesignSpace
    patients: Cohort
    designs: Mapping[str, DesignBatch]
    outcomes: Mapping[str, Outcomes]
    validation_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        ids = set(self.patients.ids)
        for name, part in (("designs", self.designs), ("outcomes", self.outcomes)):
            if set(part) != ids:
                raise ValueError(f"{name} must be given for exactly the cohort's patients")
        for pid in ids:
            if len(self.designs[pid]) != len(self.outcomes[pid]):
                raise ValueError(f"patient {pid}: designs and outcomes differ in rows")
        unknown = sorted(set(self.validation_ids) - ids)
        if unknown:
            raise ValueError(f"validation patients {unknown} are not in the cohort")

    @property
    def training_ids(self) -> tuple[str, ...]:
        held_out = set(self.validation_ids)
        return tuple(pid for pid in self.patients.ids if pid not in held_out)
