"""WinRM over HTTP: WS-Man shell messages, NTLM sealing, CLIXML; pywinrm for other auth."""
