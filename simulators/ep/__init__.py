"""The reference electrophysiology: monodomain reaction-diffusion on the patient mesh."""
