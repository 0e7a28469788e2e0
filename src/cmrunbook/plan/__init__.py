"""Planning: the ordered, concrete steps for each target host, decided before anything runs."""
