"""One module per `nanolens` subcommand, each with `run(args) -> exit code`; `nanolens.cli`
parses the command line and imports only the module of the command that runs."""
