"""Reading ConfigMgr logs in any shape, and diagnosing known failures in them."""
