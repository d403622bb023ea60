"""The reference mechanics: a regional infarcted LV in Regazzoni et al.'s closed loop."""
