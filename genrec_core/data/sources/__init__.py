"""Built-in data sources, each registered under its ``data.dataset`` name (see ``base.get_source``)."""
