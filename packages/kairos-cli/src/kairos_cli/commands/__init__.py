"""The `kairos` subcommands, one module per area; `main` wires them into the group."""
