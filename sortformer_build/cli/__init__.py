"""The command-line edge: the Hydra app, its --help, and sortformer-build-verify."""
