"""A FAISS vector store over items of any modality: vectors in a FAISS index, one item (uri + metadata)
per vector, persisted in a folder.

Similarity is the inner product of L2-normalised vectors (cosine): every vector is normalised on the way
in, every query on the way to search. Row ``i`` of the FAISS index is item ``i``; items are only ever
appended, so the FAISS ids are the item positions.

On disk (``save(folder)``)::

    folder/index.faiss     the FAISS index (always written as a CPU index)
    folder/items.jsonl     one {"uri": ..., "metadata": {...}} per line, in index order
    folder/manifest.json   format version, encoder, dim, kind, count, options, sha256 of index.faiss

Kinds (``faiss.index_factory`` strings, ``options`` in brackets):
    flat   exact search                                   "Flat"
    ivf    inverted lists, trained   [nlist, nprobe]      "IVF{nlist},Flat"
    hnsw   graph                     [M, ef_construction, ef_search]   "HNSW{M}"
    ivfpq  inverted lists + product quantizer, trained [nlist, nprobe, m, nbits, refine, k_factor]
                                                          "IVF{nlist},PQ{m}x{nbits}np[,RFlat]"
           (np: skip polysemous training, slow and unused here; RFlat: re-rank k_factor * k with exact vectors)
    sq8    exact scan over 8-bit scalar-quantised vectors, trained          "SQ8"
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np

from .atomic import recover, sha256, swap_in
from .errors import CheckpointError, ConfigError, MediaError
from .media import Retrieved

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_FILE, ITEMS_FILE, MANIFEST_FILE = "index.faiss", "items.jsonl", "manifest.json"
MEDIA_DIR = "media"  # media an index carries with it; its items name them by uris relative to the folder
KINDS = ("flat", "ivf", "hnsw", "ivfpq", "sq8")
DEVICES = ("auto", "cpu", "gpu")

# Defaults per option; `create(..., **options)` overrides them and the manifest stores the result.
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "flat": {},
    "ivf": {"nlist": 256, "nprobe": 16},
    "hnsw": {"M": 32, "ef_construction": 40, "ef_search": 64},
    "ivfpq": {"nlist": 256, "nprobe": 16, "m": 64, "nbits": 8, "refine": False, "k_factor": 4},
    "sq8": {},
}
# FAISS has no GPU version of these kinds; they stay on the CPU (others fall back if the move fails).
CPU_ONLY_KINDS = ("hnsw",)
GPU_MAX_K = 2048  # the largest k faiss' GPU search takes


def factory_string(kind: str, dim: int, options: dict[str, Any]) -> str:
    """The ``faiss.index_factory`` description of ``kind`` with ``options``."""
    if kind == "flat":
        return "Flat"
    if kind == "ivf":
        return f"IVF{options['nlist']},Flat"
    if kind == "hnsw":
        return f"HNSW{options['M']}"
    if kind == "sq8":
        return "SQ8"
    if dim % options["m"]:
        raise ConfigError(f"ivfpq needs m (sub-quantizers) to divide dim: dim={dim}, m={options['m']}; "
                          f"choose m among {[m for m in range(1, dim + 1) if dim % m == 0 and m <= 128]}")
    return f"IVF{options['nlist']},PQ{options['m']}x{options['nbits']}np" + (",RFlat" if options["refine"] else "")


def check_option_values(kind: str, options: dict[str, Any]) -> None:
    """Every option is a positive int, except ``refine`` (a bool)."""
    for name, value in options.items():
        ok = isinstance(value, bool) if name == "refine" else (type(value) is int and value > 0)
        if not ok:
            want = "true or false" if name == "refine" else "a positive int"
            raise ConfigError(f"{kind} index option {name} must be {want}, got {value!r}")


def min_train_size(kind: str, options: dict[str, Any]) -> int:
    """Fewest vectors FAISS can train ``kind`` on: one per IVF list, one per PQ centroid."""
    if kind == "ivf":
        return options["nlist"]
    if kind == "ivfpq":
        return max(options["nlist"], 2 ** options["nbits"])
    return 1


def train_size_hint(kind: str, options: dict[str, Any]) -> int:
    """How many vectors are worth collecting before training: FAISS' k-means wants ~39 per centroid."""
    return 39 * min_train_size(kind, options) if kind in ("ivf", "ivfpq") else min_train_size(kind, options)


@functools.cache
def _gpu_count() -> int:
    """GPUs the installed faiss can use; says once per process when it falls back to the CPU."""
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpus == 0:
        logger.info("faiss sees no GPU (CPU build of faiss, or no CUDA device): indexes run on the CPU")
    return gpus


def _as_matrix(vectors: Any, dim: int, what: str) -> np.ndarray:
    """A float32 [N, dim] C-contiguous copy, L2-normalised row by row (zero rows stay zero)."""
    if hasattr(vectors, "detach"):  # torch.Tensor, without importing torch here
        vectors = vectors.detach().float().cpu().numpy()
    matrix = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise MediaError(f"{what} must have shape [N, {dim}], got {tuple(matrix.shape)}; "
                         f"embed with the encoder this index was built for (dim {dim})")
    if not np.isfinite(matrix).all():
        raise MediaError(f"{what} contain NaN or infinite values; check the encoder output")
    faiss.normalize_L2(matrix)
    return matrix


def _faiss_message(error: RuntimeError) -> str:
    """The last line of a FAISS C++ exception (the earlier ones are source locations)."""
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__



def _check_item(item: Any) -> str:
    """One item as its JSONL line; refuses items that could not be saved later."""
    if not isinstance(item, dict) or not isinstance(item.get("uri"), str):
        raise ConfigError(f"each item must be a dict {{'uri': str, 'metadata': dict}}, got {item!r}")
    unknown = set(item) - {"uri", "metadata"}
    if unknown or not isinstance(item.get("metadata", {}), dict):
        raise ConfigError(f"item {item['uri']!r}: only 'uri' (str) and 'metadata' (dict) are allowed, got {item!r}")
    try:
        return json.dumps({"uri": item["uri"], "metadata": item.get("metadata", {})}, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"item {item['uri']!r}: metadata must be JSON-serialisable ({e})") from None


@dataclass
class VectorIndex:
    """Vectors of one encoder's embedding space + the item each one stands for. Build with ``create`` or
    ``load``; the constructor is for those two."""

    index: faiss.Index
    dim: int
    kind: str
    encoder: str
    options: dict[str, Any]
    encoder_path: str | None = None
    encoder_options: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)
    on_gpu: bool = False
    folder: Path | None = None  # where it was loaded from: relative item uris are relative to it

    # ----- building -----

    @classmethod
    def create(cls, dim: int, kind: str = "flat", encoder: str = "unknown", encoder_path: str | None = None,
               encoder_options: dict[str, Any] | None = None, device: str = "auto", **options: Any) -> "VectorIndex":
        """An empty index of ``kind`` for ``dim``-wide vectors of ``encoder`` (a registry name; ``encoder_path``
        and ``encoder_options`` say how it was loaded, e.g. {"feature": "embeds"}, so that queries can be
        embedded the same way later). ``options``: see the table at the top of this file.
        ``device``: "auto" (GPU when the faiss GPU build sees one), "cpu" or "gpu"."""
        if kind not in KINDS:
            raise ConfigError(f"unknown index kind {kind!r}; use one of {', '.join(KINDS)}")
        if not isinstance(dim, int) or dim <= 0:
            raise ConfigError(f"index dim must be a positive int, got {dim!r}")
        unknown = set(options) - set(DEFAULT_OPTIONS[kind])
        if unknown:
            raise ConfigError(f"unknown options {sorted(unknown)} for a {kind} index; "
                              f"it takes {sorted(DEFAULT_OPTIONS[kind]) or 'none'}")
        check_option_values(kind, options)
        options = {**DEFAULT_OPTIONS[kind], **options}
        cpu_index = faiss.index_factory(dim, factory_string(kind, dim, options), faiss.METRIC_INNER_PRODUCT)
        if kind == "hnsw":
            cpu_index.hnsw.efConstruction = options["ef_construction"]
        return cls._place(cpu_index, device, dim=dim, kind=kind, encoder=encoder, options=options,
                          encoder_path=encoder_path, encoder_options=dict(encoder_options or {}))

    @classmethod
    def _place(cls, cpu_index: faiss.Index, device: str, **fields: Any) -> "VectorIndex":
        """Moves the index onto a GPU when asked for and possible, and applies the search options."""
        kind, options = fields["kind"], fields["options"]
        if device not in DEVICES:
            raise ConfigError(f"index device must be one of {DEVICES}, got {device!r}")
        index, on_gpu = cpu_index, False
        if device != "cpu":
            if _gpu_count() == 0:
                if device == "gpu":
                    logger.warning("device='gpu' was asked for, but no GPU is usable by faiss: the %s index runs "
                                   "on the CPU", kind)
            elif kind in CPU_ONLY_KINDS:
                logger.info("faiss has no GPU version of a %s index: it runs on the CPU", kind)
            else:
                try:
                    index, on_gpu = faiss.index_cpu_to_all_gpus(cpu_index), True
                except RuntimeError as e:  # e.g. a PQ layout or a refine wrapper the GPU code does not take
                    logger.warning("faiss cannot move this %s index (%s) to the GPU (%s): it runs on the CPU",
                                   kind, options, _faiss_message(e))
        self = cls(index=index, on_gpu=on_gpu, **fields)
        self.set_search_options()
        return self

    def set_search_options(self, **options: Any) -> None:
        """Change speed/recall knobs of search: ``nprobe`` (ivf, ivfpq), ``ef_search`` (hnsw), ``k_factor``
        (ivfpq with refine). Saved with the index."""
        searchable = {"nprobe", "ef_search", "k_factor"} & set(DEFAULT_OPTIONS[self.kind])
        unknown = set(options) - searchable
        if unknown:
            raise ConfigError(f"a {self.kind} index has no search option {sorted(unknown)}; "
                              f"it takes {sorted(searchable) or 'none'}")
        check_option_values(self.kind, options)
        self.options.update(options)
        space = faiss.GpuParameterSpace() if self.on_gpu else faiss.ParameterSpace()
        faiss_names = {"nprobe": "nprobe", "ef_search": "efSearch", "k_factor": "k_factor_rf"}
        for name in searchable:
            if name == "k_factor" and not self.options["refine"]:
                continue
            space.set_index_parameter(self.index, faiss_names[name], self.options[name])

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def train(self, vectors: Any) -> None:
        """Trains IVF / PQ / SQ quantizers on ``vectors`` [N, dim] (no-op for kinds that need none)."""
        if self.is_trained:
            return
        matrix = _as_matrix(vectors, self.dim, "training vectors")
        needed = min_train_size(self.kind, self.options)
        if len(matrix) < needed:
            raise ConfigError(f"a {self.kind} index with {self.describe()} needs at least {needed} vectors to "
                              f"train, got {len(matrix)}; train on more vectors (a larger first batch or an "
                              f"explicit train() call) or lower nlist/nbits")
        self.index.train(matrix)

    def add(self, vectors: Any, items: Sequence[dict[str, Any]], batch_size: int = 65536) -> None:
        """Appends ``vectors`` [N, dim] (numpy or torch) and their ``items`` ({"uri": str, "metadata": dict}).
        An untrained index is trained on this first batch."""
        lines = [_check_item(item) for item in items]
        matrix = _as_matrix(vectors, self.dim, "vectors")
        if len(matrix) != len(lines):
            raise ConfigError(f"add() got {len(matrix)} vectors but {len(lines)} items; pass one item per vector")
        if not len(matrix):
            return
        if not self.is_trained:
            self.train(matrix)
        for start in range(0, len(matrix), batch_size):
            self.index.add(matrix[start:start + batch_size])
        self.items.extend(json.loads(line) for line in lines)

    # ----- searching -----

    def __len__(self) -> int:
        return len(self.items)

    def search_ids(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw FAISS search: (scores [B, k'], ids [B, k']) with k' = min(k, len(self)); id -1 marks a slot
        the index could not fill (IVF probing too few lists)."""
        if not isinstance(k, int) or k <= 0:
            raise ConfigError(f"k must be a positive int, got {k!r}")
        if self.on_gpu and k > GPU_MAX_K:
            raise ConfigError(f"faiss GPU indexes return at most k={GPU_MAX_K}, got k={k}; lower k or load the "
                              f"index with device='cpu'")
        matrix = _as_matrix(queries, self.dim, "queries")  # [B, dim]
        k = min(k, len(self))
        if k == 0:
            return np.zeros((len(matrix), 0), np.float32), np.zeros((len(matrix), 0), np.int64)
        return self.index.search(matrix, k)

    def search(self, queries: Any, k: int) -> list[list[Retrieved]]:
        """The ``k`` best items for each query of ``queries`` [B, dim], best first. Fewer than ``k`` when the
        index holds fewer; an empty list per query when it is empty."""
        scores, ids = self.search_ids(queries, k)
        return [[Retrieved(self._resolve(self.items[i]["uri"]), float(s), dict(self.items[i]["metadata"]))
                 for s, i in zip(row_scores, row_ids) if i >= 0]
                for row_scores, row_ids in zip(scores, ids)]

    def _resolve(self, uri: str) -> str:
        """An index that carries its media (e.g. ``gallery/0001.png`` inside the index folder, as the shipped
        toy-world index does) stores relative uris, so that it still finds them after it is moved or packed."""
        if self.folder is None or "://" in uri or Path(uri).is_absolute():
            return uri
        return str(self.folder / uri)

    def uris(self) -> set[str]:
        """Every uri already in the index (for resumable builds)."""
        return {item["uri"] for item in self.items}

    # ----- persistence -----

    def manifest(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "encoder": self.encoder, "encoder_path": self.encoder_path,
                "encoder_options": self.encoder_options,
                "dim": self.dim, "kind": self.kind, "count": len(self), "metric": "inner_product",
                "normalized": True, "options": self.options}

    def save(self, folder: str | Path) -> Path:
        """Writes the index into ``folder`` atomically: everything goes to a temporary sibling folder that
        then replaces ``folder``, so a crash mid-save leaves the previous index as it was. Media the index
        carries (``folder/media/``, named by relative uris) are kept."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.saving-", dir=folder.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the index is an ordinary folder once in place
        try:
            if (folder / MEDIA_DIR).is_dir():
                shutil.copytree(folder / MEDIA_DIR, tmp / MEDIA_DIR)
            cpu_index = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
            faiss.write_index(cpu_index, str(tmp / INDEX_FILE))
            with open(tmp / ITEMS_FILE, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(item, ensure_ascii=False) + "\n" for item in self.items)
            manifest = {**self.manifest(), "index_sha256": sha256(tmp / INDEX_FILE)}
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
            for path in tmp.iterdir():
                if path.is_file():
                    with open(path, "rb") as f:
                        os.fsync(f.fileno())
            swap_in(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path, expect_encoder: str | None = None, expect_dim: int | None = None,
             device: str = "auto") -> "VectorIndex":
        """Reads an index saved by ``save``. Refuses (``CheckpointError``) an index built with another encoder
        or dim than expected, and a missing, corrupt or incomplete one."""
        folder = recover(Path(folder))
        manifest = _read_manifest(folder)
        if expect_encoder is not None and manifest["encoder"] != expect_encoder:
            raise CheckpointError(f"{folder} was built with encoder {manifest['encoder']!r}, but encoder "
                                  f"{expect_encoder!r} was expected; rebuild the index with {expect_encoder!r} "
                                  f"or query it with {manifest['encoder']!r}")
        if expect_dim is not None and manifest["dim"] != expect_dim:
            raise CheckpointError(f"{folder} holds {manifest['dim']}-dim vectors, but dim {expect_dim} was "
                                  f"expected; rebuild the index with an encoder of dim {expect_dim} or set the "
                                  f"retrieval projection to {manifest['dim']}")
        index_path = folder / INDEX_FILE
        if not index_path.is_file():
            raise CheckpointError(f"{folder}: {INDEX_FILE} is missing; rebuild the index (anymodal index build)")
        if manifest.get("index_sha256") not in (None, sha256(index_path)):
            raise CheckpointError(f"{index_path} is corrupt (its checksum differs from the manifest's); "
                                  f"rebuild the index (anymodal index build)")
        try:
            cpu_index = faiss.read_index(str(index_path))
        except RuntimeError as e:
            raise CheckpointError(f"{index_path} is not a readable FAISS index ({_faiss_message(e)}); "
                                  f"rebuild the index (anymodal index build)") from None
        items = _read_items(folder / ITEMS_FILE)
        if not (cpu_index.ntotal == len(items) == manifest["count"]) or cpu_index.d != manifest["dim"]:
            raise CheckpointError(f"{folder} is inconsistent: the index holds {cpu_index.ntotal} vectors of dim "
                                  f"{cpu_index.d}, {ITEMS_FILE} {len(items)} items, the manifest says "
                                  f"{manifest['count']} of dim {manifest['dim']}; rebuild the index")
        return cls._place(cpu_index, device, dim=manifest["dim"], kind=manifest["kind"], encoder=manifest["encoder"],
                          options=manifest["options"], encoder_path=manifest.get("encoder_path"),
                          encoder_options=manifest.get("encoder_options", {}), items=items, folder=folder.resolve())

    def describe(self) -> str:
        """The options as 'key=value, ...', for messages."""
        return ", ".join(f"{k}={v}" for k, v in self.options.items()) or "no options"


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not an anymodal index ({MANIFEST_FILE} is missing); "
                              f"build one with `anymodal index build DIR --encoder NAME --out {folder}`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); rebuild the index") from None
    missing = {"format_version", "encoder", "dim", "kind", "count", "options"} - set(manifest)
    if missing:
        raise CheckpointError(f"{path} lacks {sorted(missing)}; rebuild the index")
    if manifest["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{folder} has index format {manifest['format_version']}, this anymodal reads up to "
                              f"{FORMAT_VERSION}; upgrade anymodal")
    if manifest["kind"] not in KINDS:
        raise CheckpointError(f"{path}: unknown index kind {manifest['kind']!r}; expected one of {KINDS}")
    return manifest


def _read_items(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; rebuild the index")
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt ({e}); rebuild the index") from None
