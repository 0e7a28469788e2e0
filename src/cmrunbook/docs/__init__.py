"""Documents for people that touch no host: the dry run and the printable checklist."""
