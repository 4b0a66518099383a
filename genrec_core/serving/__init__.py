"""Use a trained model: recommend from a workspace or an exported bundle, export, serve over HTTP.

- ``api.ServingModel`` (old name ``api.Recommender``, kept as an alias): ranks:
  ``recommend(histories, k)`` with histories in the dataset's own item ids; ``add_items``;
  ``ServingModel.load(path)`` takes a workspace root or a bundle folder;
- ``loading``: what a served model is made of (``ServingParts``), from a workspace or a bundle;
  ``catalog``: the items table and its index; ``meta.ModelMeta``: where the model came from;
- ``bundle_format``: the bundle's layout and checks (weights as safetensors, manifest with sha256
  per file and a format version); ``bundle``: ``export_bundle`` and ``write_added_items`` write one;
- ``http.create_app``: the FastAPI service (``genrec serve``) with an async micro-batcher;
  ``guard`` (write token, JSON-only bodies, body size) and ``limits`` (the request limits) keep it
  safe to put in front of other people;
- ``durable``: the writer lock and the fsynced, verified, atomic folder swap every bundle write uses;
- ``batch_io``: many users from CSV / Parquet / JSONL into one Parquet (``genrec recommend --input``).

None of this is a DVC stage; nothing here imports ``stages``.
"""

from genrec_core.serving.errors import BundleError, RequestError

__all__ = ["BundleError", "RequestError"]
