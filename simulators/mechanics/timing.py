"""When each chamber contracts within a beat, at any heart rate.

Every chamber's activation e(t) in [0, 1] is Blanco & Feijóo's raised cosine, as in Regazzoni
et al. (J Comput Phys 2022;457:111083): rising over TC from its onset, falling over TR,
periodic with the beat period RR = 60 / heart rate.

Physiological timing (the default) follows the CircAdapt model's rules (Arts et al., Am J
Physiol Heart Circ Physiol 2005;288:H1943-H1954; its reference code, ``TimingInit.m`` and
``Adapt.m``):

* a beat starts with atrial activation; the ventricles follow after the atrioventricular
  delay 0.185 RR (148 ms at 75/min, inside the normal PR interval of 120-200 ms), so the
  atria contract ahead of the ventricles and fill them at the end of diastole;
* ventricular activation lasts in proportion to 0.10 RR_ref + 0.40 RR, atrial activation in
  proportion to RR, both scaled from Regazzoni's durations at their reference RR_ref = 0.8 s
  (75/min): ventricular TC 0.25 s, TR 0.4 s; atrial TC = TR = 0.17 s. Systole shortens as
  the heart rate rises (about -2 ms per beat/min of electromechanical systole, QS2 = 541 -
  2.2 HR in men: Chest 1981;80:613).

``regazzoni2020`` gives the reference timing instead (onsets 0.9 s for the atria, 0.1 s for the
ventricles at 75/min), to compare with the ``circulation`` package.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REFERENCE_PERIOD_S = 0.8  # Regazzoni et al.'s 75 beats/min
AV_DELAY_PER_PERIOD = 0.185
VENTRICULAR_DURATION_S = {"contraction": 0.25, "relaxation": 0.4}
ATRIAL_DURATION_S = {"contraction": 0.17, "relaxation": 0.17}
HEART_RATE_RANGE_BPM = (40.0, 150.0)


@dataclass(frozen=True)
class ChamberTiming:
    """Onset of contraction within the beat, and the contraction and relaxation times [s]."""

    onset_s: float
    contraction_s: float
    relaxation_s: float

    def activation(self, t_s: np.ndarray | float, period_s: float) -> np.ndarray:
        """Raised-cosine activation in [0, 1], periodic with the beat."""
        since_onset = np.mod(np.asarray(t_s) - self.onset_s, period_s)
        since_relaxation = np.mod(np.asarray(t_s) - self.onset_s - self.contraction_s, period_s)
        rising = 0.5 * (1 - np.cos(np.pi * since_onset / self.contraction_s))
        falling = 0.5 * (1 + np.cos(np.pi * since_relaxation / self.relaxation_s))
        value = rising * (since_onset < self.contraction_s) + falling * (
            since_relaxation < self.relaxation_s
        )
        return np.clip(value, 0.0, 1.0)


@dataclass(frozen=True)
class CardiacTiming:
    """The beat period and the activation of the atria and the ventricles."""

    period_s: float
    atria: ChamberTiming
    ventricles: ChamberTiming

    @property
    def heart_rate_bpm(self) -> float:
        return 60.0 / self.period_s

    @classmethod
    def physiological(cls, heart_rate_bpm: float = 75.0) -> CardiacTiming:
        low, high = HEART_RATE_RANGE_BPM
        if not low <= heart_rate_bpm <= high:
            raise ValueError(
                f"heart rate {heart_rate_bpm:g}/min is outside {low:g}-{high:g}/min, the range "
                "the timing rules were made for"
            )
        period = 60.0 / heart_rate_bpm
        ventricular = (0.10 * REFERENCE_PERIOD_S + 0.40 * period) / (0.5 * REFERENCE_PERIOD_S)
        atrial = period / REFERENCE_PERIOD_S
        return cls(
            period_s=period,
            atria=ChamberTiming(
                0.0,
                ATRIAL_DURATION_S["contraction"] * atrial,
                ATRIAL_DURATION_S["relaxation"] * atrial,
            ),
            ventricles=ChamberTiming(
                AV_DELAY_PER_PERIOD * period,
                VENTRICULAR_DURATION_S["contraction"] * ventricular,
                VENTRICULAR_DURATION_S["relaxation"] * ventricular,
            ),
        )

    @classmethod
    def regazzoni2020(cls) -> CardiacTiming:
        """The reference model's timing, as the ``circulation`` package has it."""
        return cls(
            period_s=REFERENCE_PERIOD_S,
            atria=ChamberTiming(0.9 % REFERENCE_PERIOD_S, 0.17, 0.17),
            ventricles=ChamberTiming(0.1, 0.25, 0.4),
        )
