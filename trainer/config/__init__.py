"""The training configuration: frozen, validated dataclasses (`schema`) and their resolution from per-dataset
defaults, a TOML file and command-line values (`defaults`). Start from `train_config(...)`, as the CLI does."""
