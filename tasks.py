"""invoke entry point: the task collection lives in the cmrunbook package."""

from cmrunbook.cli.tasks import ns

__all__ = ["ns"]
