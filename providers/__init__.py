"""Provider adapters (one module per cloud, found through a registry, imported lazily)."""
