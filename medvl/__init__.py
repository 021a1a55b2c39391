"""medvl: medical-imaging domain adaptation with radiology reports."""

__version__ = "0.1.0"
