"""cmrunbook: known ConfigMgr OS-deployment failures, fixed by runbooks rendered to PowerShell."""

__version__ = "0.1.0"
