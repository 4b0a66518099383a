"""Raw data sources and the SPEC section 1 protocol (k-core, time order, leave-one-out)."""
