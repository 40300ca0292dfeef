"""The `fastmlp` commands, one module each (options, help and body together); fastmlp.cli loads
them lazily. Shared pieces are in fastmlp.commands.common."""
