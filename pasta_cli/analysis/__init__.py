"""pasta-analyze: why PASTA works, measured. One module per subcommand (heads, norms, ablate, each with its
`command` and `report_lines`), what they share (subject: models, inputs, zeroing vectors), and cli.py."""
