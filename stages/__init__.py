"""One module per DVC stage.

Convention: each module exposes ``run(params: Params, root: Path) -> None``; it reads its inputs
and writes its outputs under ``root`` at the places ``genrec_core.paths.ArtifactPaths`` names
(mirrored in dvc.yaml), every write atomic. ``genrec_core.cli`` turns each into a command.
A stage module imports the library (``genrec_core``) only, never another stage module: what two
stages share (artifact readers, checkpoint loaders, tables, plots) lives in the library.
"""
