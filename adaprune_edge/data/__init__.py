"""Text data: calibration pools, self-generated text, the three disjoint text sets."""
