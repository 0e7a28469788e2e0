"""What a run leaves behind: the journal (written and read back) and the reports made from it."""
