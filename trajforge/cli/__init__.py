"""The `trajforge` command: one entry point, one module per subcommand (imported only when chosen)."""
