"""The lab's WinRM service, one module per protocol layer, each importing only layers below it.

From the bottom: ``cmdline`` (the argv a command line gives) and ``commands`` (what runs behind a
shell: backends and commands); ``soap`` (WS-Man envelopes, requests and faults); ``shells`` (the
WinRS shell operations); ``control`` (counters and injected faults); ``ntlm`` (the NTLM acceptor
and its credential file) and ``encryption`` ([MS-WSMV] message encryption); ``server`` (HTTP,
authentication, life cycle). Nothing here imports the engine's WinRM client.
"""
