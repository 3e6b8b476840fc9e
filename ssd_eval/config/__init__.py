"""Layer 1: what a run is: the config dataclasses, protocols, and loading YAML into them."""
