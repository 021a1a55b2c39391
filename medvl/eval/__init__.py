"""medvl.eval."""
