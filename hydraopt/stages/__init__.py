"""The pipeline's stages, one module each; :mod:`hydraopt.pipeline` orders them."""
