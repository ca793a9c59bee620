"""The `phobos` commands, one module per group; phobos/cli.py parses the command line and dispatches here."""
