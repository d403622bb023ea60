"""The domain: patients, polymers, the design space, design batches and outcomes."""

from hydraopt.domain.design import (
    CONTINUOUS_FIELDS,
    COVERAGE_PATTERNS,
    DEFAULT_PARAMETERS,
    ContinuousParameter,
    DesignBatch,
    DesignSpace,
)
from hydraopt.domain.outcomes import Outcomes, OutputSpec, Predictions
from hydraopt.domain.patient import (
    DEFAULT_INFARCT_AGE_DAYS,
    FEATURE_NAMES,
    PATIENT_FEATURES,
    Cohort,
    Patient,
    PatientFeature,
)
from hydraopt.domain.polymer import (
    DEGRADATION_MODES,
    POLYMER_CATEGORIES,
    Polymer,
    PolymerLibrary,
    PropertyRange,
)
from hydraopt.domain.training import (
    PolymerInput,
    SurrogateDomain,
    SurrogateInputs,
    TrainingData,
)

__all__ = [
    "CONTINUOUS_FIELDS",
    "COVERAGE_PATTERNS",
    "DEFAULT_INFARCT_AGE_DAYS",
    "DEFAULT_PARAMETERS",
    "DEGRADATION_MODES",
    "FEATURE_NAMES",
    "PATIENT_FEATURES",
    "POLYMER_CATEGORIES",
    "Cohort",
    "ContinuousParameter",
    "DesignBatch",
    "DesignSpace",
    "Outcomes",
    "OutputSpec",
    "Patient",
    "PatientFeature",
    "Polymer",
    "PolymerInput",
    "PolymerLibrary",
    "Predictions",
    "PropertyRange",
    "SurrogateDomain",
    "SurrogateInputs",
    "TrainingData",
]
