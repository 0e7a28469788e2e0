"""Reaching a Windows host: the transport-neutral interface, and its WinRM implementation."""
