"""invoke entry point: the task collection lives in the cmrunbook package."""

from cmrunbook.cli.collection import ns

__all__ = ["ns"]
