"""Pricing: the price catalog, its importers and the pure cost math."""
