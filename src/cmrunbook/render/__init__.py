"""Rendering: every PowerShell script the tool sends, and the result-line protocol of replies."""
