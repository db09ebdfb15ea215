"""The SDK benchmark plugin and its zipapp builder."""
