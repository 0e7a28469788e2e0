"""Running a plan for real: orchestration, host execution, log waits, reboots, locks, console."""
