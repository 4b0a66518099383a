"""Use a trained model: recommend from a workspace or an exported bundle, export, serve over HTTP.

- ``api.Recommender``: load (``Recommender.load(path)``: a workspace root or a bundle folder) and
  ``recommend(histories, k)`` with histories in the dataset's own item ids;
- ``bundle``: ``export_bundle`` / ``read_bundle`` (weights as safetensors, manifest with sha256
  per file and a format version);
- ``http.create_app``: the FastAPI service (``genrec serve``) with an async micro-batcher;
  ``guard`` (write token, JSON-only bodies, body size) and ``limits`` (the request limits) keep it
  safe to put in front of other people;
- ``durable``: the writer lock and the fsynced, verified, atomic folder swap every bundle write uses;
- ``batch_io``: many users from CSV / Parquet / JSONL into one Parquet (``genrec recommend --input``).

None of this is a DVC stage; nothing here imports ``stages``.
"""

from genrec_core.serving.errors import BundleError, RequestError

__all__ = ["BundleError", "RequestError"]
