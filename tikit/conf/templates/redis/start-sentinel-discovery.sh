# After a failover the primary is whoever Sentinel says, not necessarily ordinal 0.
primary=$(ask_sentinel @SENTINEL_HOST@ @SENTINEL_PORT@ @MASTER@)
