"""trustpoint-agent: onboards a device into a Trustpoint PKI by itself, and keeps its credential renewed."""
