"""medvl.data."""
