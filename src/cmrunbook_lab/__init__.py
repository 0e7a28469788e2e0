"""The lab: a WS-Management server on 127.0.0.1 with simulated ConfigMgr hosts behind it."""
