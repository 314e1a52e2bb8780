"""Float model zoo, quantizer and integer golden model for SeesawFaceNets."""
