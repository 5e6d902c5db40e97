"""What every capability shares: rows and frames, expressions, the runner fork."""
