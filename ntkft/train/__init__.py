"""ntkft.train."""
