"""Where each stage reads and writes, relative to the project root (mirrored in dvc.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ArtifactPaths:
    root: Path = Path(".")

    # preprocess
    @property
    def processed_dir(self) -> Path:
        return self.root / "data" / "processed"

    @property
    def items(self) -> Path:
        return self.processed_dir / "items.parquet"

    @property
    def sequences(self) -> Path:
        return self.processed_dir / "sequences.parquet"

    def examples(self, split: str) -> Path:
        return self.processed_dir / f"{split}.parquet"

    @property
    def dataset_info(self) -> Path:
        """JSON: dataset name, its default item-text template and text fields."""
        return self.processed_dir / "dataset.json"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def data_stats_json(self) -> Path:
        return self.reports_dir / "data_stats.json"

    @property
    def data_stats_md(self) -> Path:
        return self.reports_dir / "data_stats.md"

    # embed
    @property
    def embeddings(self) -> Path:
        return self.root / "data" / "embeddings" / "item_vectors.parquet"

    # tokenizer
    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "data" / "tokenizer"

    @property
    def tokenizer_reports_dir(self) -> Path:
        return self.reports_dir / "tokenizer"

    # emit-ids
    @property
    def id_table(self) -> Path:
        return self.root / "data" / "ids" / "item_ids.parquet"

    @property
    def id_reports_dir(self) -> Path:
        return self.reports_dir / "ids"

    # train (recommender)
    @property
    def recommender_dir(self) -> Path:
        """Checkpoints: last.pt (resume), best.pt (best validation NDCG@10)."""
        return self.root / "data" / "recommender"

    @property
    def final_id_table(self) -> Path:
        """The IDs of the selected model (best.pt) when the method moved them during training, with data/ids/item_ids.parquet's schema."""
        return self.recommender_dir / "item_ids.parquet"

    @property
    def train_reports_dir(self) -> Path:
        """dvclive logs and training summary of the recommender."""
        return self.reports_dir / "train"

    @property
    def train_metrics(self) -> Path:
        """What experiments are compared on from training: best validation metrics, epoch, seconds."""
        return self.train_reports_dir / "best_valid.json"

    # what a training method reports besides training (Method hooks): the influence of its data groups,
    # fine-tuning per slot, which model the evaluate stage tests
    @property
    def method_reports_dir(self) -> Path:
        return self.reports_dir / "method"

    @property
    def influence_csv(self) -> Path:
        """Per stage end and data group (tokenizer): influence, cumulative influence, p (header only when the method computes none)."""
        return self.method_reports_dir / "influence.csv"

    def finetune_dir(self, slot: int) -> Path:
        """Checkpoints of fine-tuning slot ``slot`` (or ``skipped.json`` for a no-op slot)."""
        return self.root / "data" / "finetune" / str(slot)

    def finetune_reports_dir(self, slot: int) -> Path:
        return self.method_reports_dir / "finetune" / str(slot)

    def finetune_result(self, slot: int) -> Path:
        """JSON: the slot's tokenizer and best validation metrics, or why it was skipped."""
        return self.finetune_reports_dir(slot) / "result.json"

    @property
    def finetune_table(self) -> Path:
        """CSV: pre-training and every fine-tuned tokenizer, validation metrics, selected."""
        return self.method_reports_dir / "finetune.csv"

    @property
    def selected_model(self) -> Path:
        """JSON: the checkpoint the evaluate stage tests (data/recommender/best.pt unless the method fine-tunes)."""
        return self.method_reports_dir / "selected.json"

    # evaluate
    @property
    def predictions(self) -> Path:
        """user_id, target_item, items (ranked list), scores."""
        return self.root / "data" / "predictions" / "test.parquet"

    @property
    def metrics(self) -> Path:
        return self.reports_dir / "metrics.json"

    # analyse
    @property
    def analysis_dir(self) -> Path:
        return self.reports_dir / "analysis"

    @property
    def reports_readme(self) -> Path:
        return self.reports_dir / "README.md"
