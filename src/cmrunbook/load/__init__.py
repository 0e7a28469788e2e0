"""Loading what an operator edits (runbooks, inventories, log catalog), errors marked file:line."""
