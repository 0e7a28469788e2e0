"""The invoke tasks and the cmrunbook command: options in, engine calls, exit codes out."""
