"""`index add`: embed a library's new and changed items into the gallery store, in batches, resumably.

    omniretriever index add --model RUN --data DIR --manifest uploads.jsonl --uri library.db --view av --view t

Items are embedded exactly as `index build` embeds them (serving/index.py: model.data.load_bank with the
model's windows and on_error="skip", model.evaluate.embed_rows, gallery_plan / gallery_entries). Before any
decoding, each item's content hash (sha256 of its captions, its media paths and bytes, and the decode and
window settings) is compared with the store's ledger: an item whose hash is already there for a view is
not decoded again for it; a changed one has its old entries deleted and the new ones written. Work goes in
batches of items (decode, embed, write, mark done), so an add killed at any point (kill -9) loses at most
the batch in flight, and the next run redoes exactly the items not marked done: entries are upserted by a
stable primary key and an item is marked done only after all of its entries are in.

A record that cannot be indexed (a malformed line, a media path outside DATA, media that do not decode, an
id the store cannot hold) is skipped and reported (AddReport.rejects); the entries an item had before stay.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from model.modalities import canonical_view
from serving.store import LIVE, GalleryStore, IndexConfig, ItemMeta, check_item_id
from serving.index import UNKNOWN, gallery_entries, gallery_plan, validated_manifest

HASH_FORMAT = "omniretriever-content-v1"


@dataclass(frozen=True)
class Pending:
    """A manifest record to embed: where it is, its raw line, and the views it is not done in."""

    line: int
    raw: str
    record: object  # model.manifest.Record
    content_hash: str
    views: tuple[str, ...]


@dataclass(frozen=True)
class Batch:
    """What on_batch is told after each batch is in the store."""

    number: int
    batches: int
    items_done: int  # items of the pending ones handled so far (embedded or rejected)
    items: int  # pending items in all


@dataclass
class AddReport:
    uri: str
    weights_sha256: str
    source: Path  # the manifest read
    records: int = 0  # records of the manifest that parsed
    unchanged: int = 0  # items already done in every view (not decoded)
    embedded: int = 0  # items decoded and written
    entries: dict[str, int] = field(default_factory=dict)  # view -> entries written
    generation: int = 0  # the generation of the model's galleries written
    published: bool = False  # whether this add made that generation the served one
    rejects: list = field(default_factory=list)  # model.data.Reject, in manifest order


def content_hash(record, media: dict[str, Path | None], settings: str) -> str:
    """sha256 of what an item's entries are computed from: its captions, its media paths and bytes (a file
    that cannot be read hashes as missing: decoding will reject it), and the decode and window settings."""
    h = hashlib.sha256()
    head = {"format": HASH_FORMAT, "text": record.text, "alt_texts": list(record.alt_texts), "video": record.video,
            "audio": record.audio, "settings": settings}
    h.update(json.dumps(head, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    for fld in ("video", "audio"):
        path = media[fld]
        h.update(f"\n{fld}:".encode())
        if path is None:
            h.update(b"none")
            continue
        try:
            with open(path, "rb") as fh:
                h.update(hashlib.file_digest(fh, "sha256").digest())
        except OSError:
            h.update(b"missing")
    return h.hexdigest()


def decode_settings(config, windowing) -> str:
    """The settings an entry's embedding depends on besides the item and the weights: decode and windows."""
    return json.dumps({"decode": asdict(config.decode), "audio_input": config.audio_input,
                       "window": windowing.seconds, "stride": windowing.stride}, sort_keys=True)


def _scan(source: Path, data: Path, settings: str, reject, shard: tuple[int, int] | None = None,
          ) -> list[tuple[int, str, object, str]]:
    """The manifest's usable records with their content hashes: (line, raw line, Record, hash). Malformed
    lines, repeated ids, ids the store cannot hold and media paths outside DATA go to `reject`. A `shard`
    (i, n) keeps the lines whose number is i modulo n (and what is told of them): the n shards of a manifest
    hold each of its lines exactly once, whatever their content, and a repeated id is still seen across them."""
    from model.data import manifest_entries

    def owns(line: int | None) -> bool:
        return shard is None or (shard[0] == 0 if line is None else (line - 1) % shard[1] == shard[0])

    entries = manifest_entries(source, data, lambda line, *rest: owns(line) and reject(line, *rest),
                               check=lambda rec: check_item_id(rec.id))
    entries = [e for e in entries if owns(e.line)]
    return [(e.line, e.raw, e.record,
             content_hash(e.record, {f: None if p is None else Path(p) for f, p in zip(("video", "audio"), e.paths)},
                          settings)) for e in entries]


def add_items(model: str | Path, data: str | Path, views: list[str], uri: str | Path, *, split: str | None = None,
              manifest: str | Path | None = None, source: str | None = None, batch_size: int = 64,
              workers: int | None = None, window: float | None = None, stride: float | None = None,
              index: IndexConfig | None = None, on_batch: Callable[[Batch], None] | None = None,
              generation: str | int = LIVE, publish: bool | None = None, wait: float = 0.0,
              shard: tuple[int, int] | None = None) -> AddReport:
    """Embed DATA's split (or `manifest`: a file, or a validation report directory) into the store at `uri`
    in each view, skipping items already there with the same content (see the module docstring). Rows
    record `split` (or the record's, from a validation report) and `source` (default: the manifest's stem,
    or DATA's name for a split).

    `generation` is GalleryStore.open's: LIVE adds to the served gallery (or builds the first one), REBUILD
    re-embeds the library into a new generation (resuming one a killed rebuild left). `publish` None serves
    the generation written once every batch is in, when it was not served already; False leaves that to a
    later publish (the shards of the index pipeline); True publishes it in any case. `shard` (i, n) adds only
    the manifest's lines numbered i modulo n (see _scan); `wait` is how long a Lite store busy in another
    process (another shard) is waited for."""
    from model.data import Reject
    from model.manifest import existing_split
    from model.media import Windowing
    from model.store import load_model, weights_digest

    canonical = list(dict.fromkeys(canonical_view(v) for v in views))
    if not canonical:
        raise ValueError("give at least one --view (t, v, a, tv, av, at or tva)")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard {shard[0]} of {shard[1]}: need 0 <= shard < shards")
    if (split is None) == (manifest is None):
        raise ValueError("give one of --split or --manifest")
    data = Path(data)
    src = validated_manifest(manifest) if manifest is not None else existing_split(data, split)
    source = source or (data.name if manifest is None else Path(manifest).stem)
    loaded = load_model(model)
    windowing = Windowing.for_model(loaded.config.decode, window, stride)
    report = AddReport(str(uri), weights_digest(loaded.path), src)

    def reject(line, rid, fld, exc) -> None:
        report.rejects.append(Reject(line, rid, fld, getattr(exc, "reason", str(exc)), type(exc).__name__))

    scanned = _scan(src, data, decode_settings(loaded.config, windowing), reject, shard)
    report.records = len(scanned)
    with GalleryStore.open(uri, report.weights_sha256, index, generation=generation, wait=wait) as store:
        report.generation = store.generation
        for view in canonical:
            store.ensure_view(view, loaded.config.embed_dim)
        done = {v: store.done(v, {rec.id: h for _, _, rec, h in scanned}) for v in canonical}
        pending = [Pending(line, raw, rec, h, tuple(v for v in canonical if rec.id not in done[v]))
                   for line, raw, rec, h in scanned]
        pending = [p for p in pending if p.views]
        report.unchanged = len(scanned) - len(pending)
        batches = [pending[i: i + batch_size] for i in range(0, len(pending), batch_size)]
        handled = 0
        for number, batch in enumerate(batches, 1):
            _add_batch(store, loaded, data, batch, windowing, workers, split, source, report)
            handled += len(batch)
            if on_batch is not None:
                on_batch(Batch(number, len(batches), handled, len(pending)))
        if publish or (publish is None and not store.live):
            store.publish()  # flushes first
            report.published = True
        else:
            store.flush()
    report.rejects.sort(key=lambda r: (r.line is None, r.line or 0))
    return report


def _add_batch(store: GalleryStore, loaded, data: Path, batch: list[Pending], windowing, workers: int | None,
               split: str | None, source: str, report: AddReport) -> None:
    """Decode a batch's items (through a manifest of their lines), embed them in the views they are not done
    in, and replace their entries there; their rejects go to the report with their own manifest lines."""
    from model.data import NoRecordsError, load_bank
    from model.evaluate import embed_rows
    from model.media import MediaLimits

    limits = MediaLimits().windowed()  # long media: cut into windows
    with tempfile.TemporaryDirectory(prefix="omniretriever-add-") as tmp:
        part = Path(tmp) / "batch.jsonl"
        part.write_text("".join(p.raw + "\n" for p in batch), encoding="utf-8")
        try:
            bank = load_bank(data, "batch", loaded.config, workers=workers, progress=False, manifest=part,
                             on_error="skip", windowing=windowing, limits=limits)
            rejects = bank.rejects
        except NoRecordsError as exc:
            bank, rejects = None, exc.rejects
    report.rejects += [replace(r, line=batch[r.line - 1].line) if r.line else r for r in rejects]
    if bank is None:
        return
    by_id = {p.record.id: p for p in batch}
    plans = {}
    for view in dict.fromkeys(v for p in batch for v in p.views):
        plan = gallery_plan(bank, view)
        plans[view] = [mods if view in by_id[i].views else () for i, mods in zip(bank.ids, plan)]
    embedded = embed_rows(loaded, bank, plans)
    seconds = dict(zip(bank.ids, bank.seconds or []))
    decoded = list(dict.fromkeys(bank.ids))
    for view, plan in plans.items():
        rows, entries = gallery_entries(bank, plan)
        items = [i for i in decoded if view in by_id[i].views]
        meta = {i: _meta(by_id[i], split, source, seconds.get(i)) for i in items}
        store.replace_items(view, items, embedded[view][rows].float().numpy(), entries, meta)
        report.entries[view] = report.entries.get(view, 0) + len(entries)
    report.embedded += len(decoded)


def _meta(p: Pending, split: str | None, source: str, seconds: float | None) -> ItemMeta:
    """The item fields of a pending item's rows; `split` None: the record's own (a validation report's)."""
    rec = p.record
    duration = UNKNOWN if seconds is None or not math.isfinite(seconds) else float(seconds)
    split = split if split is not None else str(json.loads(p.raw).get("split", ""))
    return ItemMeta(media_uri=rec.video or rec.audio or "", split=split, source=source, duration=duration,
                    content_hash=p.content_hash, caption=rec.text or "")
