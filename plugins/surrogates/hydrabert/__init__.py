"""The HYDRA-BERT surrogate: network, losses, scaling, training loop and the plugin object."""
