"""The built-in tokenizer kinds, one spec module each (``spec.BUILTIN_TOKENIZER_MODULES``):
``rqvae`` (the default), ``pq`` and ``rqkmeans``. Each module is light (no torch at import):
config validation reads the specs at every command's start."""
