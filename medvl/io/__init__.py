"""medvl.io."""
