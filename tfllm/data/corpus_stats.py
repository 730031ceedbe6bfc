"""What `prepare_corpus` wrote: counts and shard files, saved as `stats.json`."""

import dataclasses
import json
import os
from typing import Optional

from tfllm.errors import UserError

STATS_FILE = "stats.json"
SPLITS = ("train", "val")


@dataclasses.dataclass(frozen=True)
class CorpusStats:
    """Counts and shard files of a prepared corpus directory.

    Args:
        out_dir: the prepared corpus directory.
        source: the corpus path the training split came from.
        val_source: the validation corpus path, or `None` when the validation
            split was carved out of `source`.
        val_fraction: the fraction of documents sent to validation, or `None`
            with `val_source`.
        seed: the seed of the document split.
        documents: documents per split, `{"train": ..., "val": ...}`.
        chars: characters per split.
        bytes: UTF-8 bytes per split.
        files: absolute shard paths per split, in order.
        cleaning: the `Cleaner` counts (see `tfllm.data.cleaning.COUNT_KEYS`);
            corpora prepared before a count existed lack it.
        cleaner: the `Cleaner` settings used.

    Example:

    >>> stats = CorpusStats.load("runs/corpus")  # doctest: +SKIP
    >>> stats.documents["train"], stats.files["val"]  # doctest: +SKIP
    (1745, ['/.../runs/corpus/val-00000.tfrecord'])
    """

    out_dir: str
    source: str
    val_source: Optional[str]
    val_fraction: Optional[float]
    seed: int
    documents: dict
    chars: dict
    bytes: dict
    files: dict
    cleaning: dict
    cleaner: dict

    @property
    def train_files(self) -> list:
        return self.files["train"]

    @property
    def val_files(self) -> list:
        return self.files["val"]

    def summary(self) -> str:
        """One line for the console: documents and characters per split, and what cleaning dropped."""
        splits = ", ".join(
            f"{split} {self.documents[split]:,} documents / {self.chars[split]:,} chars "
            f"in {len(self.files[split])} shards"
            for split in SPLITS
        )
        c = self.cleaning
        # Corpora prepared before a step existed have no count for it: `get`, not `[]`.
        dropped = [
            f"{c['dropped_empty']:,} empty",
            f"{c['dropped_too_short']:,} too short",
            f"{c['dropped_duplicate']:,} duplicates",
        ]
        quality = c.get("quality", {})
        for count, what in (
            (c.get("near_duplicate", 0), "near duplicates"),
            (sum(quality.values()), "low quality" + _by_kind(quality)),
            (c.get("blocklist", {}).get("dropped", 0), "blocklisted"),
        ):
            if count:
                dropped.append(f"{count:,} {what}")
        changed = ""
        redacted = c.get("personal_data", {})
        if sum(redacted.values()):
            changed += f"; redacted {sum(redacted.values()):,} personal data{_by_kind(redacted)}"
        masked = c.get("blocklist", {}).get("masked", 0)
        if masked:
            changed += f"; masked {masked:,} blocklisted spans"
        return (
            f"Corpus {self.source}: {splits}; cleaning kept {c['kept']:,} of {c['documents_in']:,} documents "
            f"(dropped {', '.join(dropped)}){changed}"
        )

    def to_json(self) -> dict:
        """The `stats.json` content: shard files relative to `out_dir`, which may move."""
        content = dataclasses.asdict(self)
        del content["out_dir"]
        content["files"] = {split: [os.path.basename(f) for f in files] for split, files in self.files.items()}
        return content

    def save(self, directory: str) -> None:
        with open(os.path.join(directory, STATS_FILE), "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def load(cls, out_dir: str) -> "CorpusStats":
        path = os.path.join(out_dir, STATS_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                content = json.load(f)
        except FileNotFoundError:
            raise UserError(
                f"{path} does not exist: {out_dir!r} is not a prepared corpus. Prepare it first."
            ) from None
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON ({e.msg}); prepare the corpus again.") from None
        out_dir = os.path.abspath(out_dir)
        content["files"] = {
            split: [os.path.join(out_dir, name) for name in names] for split, names in content["files"].items()
        }
        return cls(out_dir=out_dir, **content)


def _by_kind(counts: dict) -> str:
    """The non-zero counts of a per-kind mapping, as ` (2 email, 1 phone)`."""
    parts = [f"{count:,} {kind}" for kind, count in counts.items() if count]
    return f" ({', '.join(parts)})" if parts else ""
