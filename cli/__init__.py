"""The `convq` command-line tool (click and rich) on the client package; see cli.main for its exit codes."""
