"""medvl.data.sources."""
