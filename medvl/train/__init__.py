"""medvl.train."""
