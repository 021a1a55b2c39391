"""medvl.infer."""
