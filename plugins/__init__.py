"""hydraopt's built-in plugins, registered through the ``hydraopt`` entry-point group."""
