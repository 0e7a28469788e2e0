"""invoke entry point: the task collection lives in the cmrunbook package."""

from cmrunbook.tasks import ns

__all__ = ["ns"]
