"""hydraopt's built-in simulators and simulator adapters, registered as plugins."""
