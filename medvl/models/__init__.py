"""medvl.models."""
