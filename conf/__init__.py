# Makes conf/ the package pasta_cli.conf (see pyproject.toml), so the configs ship inside the wheel
# and Hydra finds them as pkg://pasta_cli.conf wherever pasta-cli is installed.
