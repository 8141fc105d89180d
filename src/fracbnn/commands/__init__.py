"""CLI subcommands, one module each (see fracbnn.cli.COMMANDS)."""
