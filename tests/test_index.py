"""anymodal.index.VectorIndex and decoders.retrieval.IndexRetriever: kinds, persistence, bad input."""

import json

import numpy as np
import pytest
import torch

from anymodal.errors import CheckpointError, ConfigError, MediaError
from anymodal.index import INDEX_FILE, MANIFEST_FILE, VectorIndex
from anymodal.interfaces import Retriever
from anymodal.media import Retrieved
from decoders.retrieval import IndexRetriever

DIM = 16


def vectors(n, seed=0, dim=DIM):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def items(n, start=0):
    return [{"uri": f"file://item{i}.png", "metadata": {"i": i}} for i in range(start, start + n)]


def filled(kind="flat", n=300, **options):
    index = VectorIndex.create(DIM, kind, encoder="clip", **options)
    index.add(vectors(n), items(n))
    return index


# easy set: well separated random directions, each kind must find the exact item (small options so the
# IVF / PQ kinds train on 300 vectors)
KINDS = [("flat", {}), ("ivf", {"nlist": 8, "nprobe": 8}), ("hnsw", {"M": 8}),
         ("ivfpq", {"nlist": 8, "nprobe": 8, "m": 4, "nbits": 6, "refine": True}), ("sq8", {})]


@pytest.mark.parametrize("kind,options", KINDS, ids=[k for k, _ in KINDS])
def test_each_kind_finds_the_exact_nearest_neighbour(kind, options):
    index = filled(kind, **options)
    noisy = vectors(300) + 0.01 * vectors(300, seed=1)  # a small nudge off each stored vector
    hits = index.search(noisy[:50], k=3)
    assert [h[0].uri for h in hits] == [f"file://item{i}.png" for i in range(50)]
    assert all(isinstance(h[0], Retrieved) and h[0].metadata["i"] == i for i, h in enumerate(hits))
    assert all(h[0].score >= h[1].score >= h[2].score for h in hits)


def test_scores_are_cosine_similarities():
    index = filled()
    hit = index.search(5.0 * vectors(300)[7:8], k=1)[0][0]  # scale does not matter: both sides normalised
    assert hit.uri == "file://item7.png" and hit.score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kind,options", KINDS[:3], ids=[k for k, _ in KINDS[:3]])
def test_round_trip_gives_the_same_results(tmp_path, kind, options):
    index = filled(kind, **options)
    index.save(tmp_path / "idx")
    loaded = VectorIndex.load(tmp_path / "idx", expect_encoder="clip", expect_dim=DIM)
    queries = vectors(20, seed=3)
    assert loaded.search(queries, 5) == index.search(queries, 5)
    assert (loaded.kind, loaded.options, len(loaded)) == (kind, index.options, 300)
    manifest = json.loads((tmp_path / "idx" / MANIFEST_FILE).read_text())
    assert manifest["encoder"] == "clip" and manifest["dim"] == DIM and manifest["count"] == 300
    assert manifest["kind"] == kind and manifest["format_version"] == 1


def test_incremental_add_and_resave(tmp_path):
    index = filled(n=100)
    index.save(tmp_path / "idx")
    loaded = VectorIndex.load(tmp_path / "idx")
    loaded.add(vectors(300)[100:], items(200, start=100))
    loaded.save(tmp_path / "idx")
    again = VectorIndex.load(tmp_path / "idx")
    assert len(again) == 300 and "file://item250.png" in again.uris()
    assert again.search(vectors(300)[250:251], 1)[0][0].uri == "file://item250.png"
    assert not list(tmp_path.glob(".idx*"))  # no temp or backup folder left behind


def test_untrained_index_trains_on_first_batch_and_refuses_too_few():
    index = VectorIndex.create(DIM, "ivf", encoder="clip", nlist=64)
    with pytest.raises(ConfigError, match="needs at least 64 vectors to train, got 10"):
        index.add(vectors(10), items(10))
    assert len(index) == 0
    index.train(vectors(200))
    index.add(vectors(10), items(10))  # already trained: a small batch is fine now
    assert index.search(vectors(10)[3:4], 1)[0][0].uri == "file://item3.png"


def test_empty_index_and_k_larger_than_index():
    index = VectorIndex.create(DIM, "flat", encoder="clip")
    assert index.search(vectors(3), k=5) == [[], [], []]
    index.add(vectors(4), items(4))
    hits = index.search(vectors(2), k=10)
    assert [len(h) for h in hits] == [4, 4]


def test_dim_and_encoder_mismatch_are_refused(tmp_path):
    filled().save(tmp_path / "idx")
    with pytest.raises(CheckpointError, match=r"encoder 'clip'.*'imagebind' was expected"):
        VectorIndex.load(tmp_path / "idx", expect_encoder="imagebind")
    with pytest.raises(CheckpointError, match=r"16-dim vectors, but dim 512 was expected"):
        VectorIndex.load(tmp_path / "idx", expect_dim=512)
    with pytest.raises(CheckpointError, match="512"):
        IndexRetriever.from_pretrained(tmp_path / "idx", expect_dim=512)
    with pytest.raises(MediaError, match=r"shape \[N, 16\]"):
        filled().add(vectors(2, dim=8), items(2))


@pytest.mark.parametrize("damage", ["garbage", "truncate", "bitflip", "delete"])
def test_corrupted_or_missing_index_file(tmp_path, damage):
    filled().save(tmp_path / "idx")
    path = tmp_path / "idx" / INDEX_FILE
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a faiss index at all")
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "bitflip":
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match=INDEX_FILE):
        VectorIndex.load(tmp_path / "idx")


def test_unreadable_faiss_file_without_checksum_is_a_checkpoint_error(tmp_path):
    filled().save(tmp_path / "idx")
    manifest_path = tmp_path / "idx" / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    del manifest["index_sha256"]  # e.g. a manifest written by hand: faiss itself must be guarded
    manifest_path.write_text(json.dumps(manifest))
    (tmp_path / "idx" / INDEX_FILE).write_bytes(b"IxF2" + b"\0" * 10)
    with pytest.raises(CheckpointError, match="not a readable FAISS index"):
        VectorIndex.load(tmp_path / "idx")


def test_missing_folder_says_how_to_build(tmp_path):
    with pytest.raises(CheckpointError, match="anymodal index build"):
        VectorIndex.load(tmp_path / "nothing")


def test_interrupted_save_keeps_the_previous_index(tmp_path, monkeypatch):
    filled(n=50).save(tmp_path / "idx")
    bigger = filled(n=100)
    import anymodal.index as module

    def crash(*args):
        raise KeyboardInterrupt  # dies while writing the new files
    monkeypatch.setattr(module.faiss, "write_index", crash)
    with pytest.raises(KeyboardInterrupt):
        bigger.save(tmp_path / "idx")
    assert len(VectorIndex.load(tmp_path / "idx")) == 50
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_crash_between_renames_is_recovered(tmp_path):
    filled(n=50).save(tmp_path / "idx")
    (tmp_path / "idx").rename(tmp_path / ".idx.previous")  # the state right after the first rename
    assert len(VectorIndex.load(tmp_path / "idx")) == 50


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="unknown index kind 'annoy'"):
        VectorIndex.create(DIM, "annoy")
    with pytest.raises(ConfigError, match="unknown options"):
        VectorIndex.create(DIM, "flat", nlist=4)
    with pytest.raises(ConfigError, match="nlist must be a positive int, got 0"):
        VectorIndex.create(DIM, "ivf", nlist=0)
    with pytest.raises(ConfigError, match="refine must be true or false"):
        VectorIndex.create(DIM, "ivfpq", m=4, refine=1)
    with pytest.raises(ConfigError, match="nprobe must be a positive int"):
        filled("ivf", nlist=4).set_search_options(nprobe="8")
    with pytest.raises(ConfigError, match="m .*divide dim"):
        VectorIndex.create(DIM, "ivfpq", m=5)
    with pytest.raises(ConfigError, match="one item per vector"):
        VectorIndex.create(DIM).add(vectors(3), items(2))
    with pytest.raises(ConfigError, match="JSON"):
        VectorIndex.create(DIM).add(vectors(1), [{"uri": "a", "metadata": {"x": object()}}])
    with pytest.raises(MediaError, match="NaN"):
        VectorIndex.create(DIM).add(np.full((1, DIM), np.nan), items(1))


def test_search_options_are_saved(tmp_path):
    index = filled("hnsw", M=8)
    index.set_search_options(ef_search=128)
    index.save(tmp_path / "idx")
    assert VectorIndex.load(tmp_path / "idx").options["ef_search"] == 128
    with pytest.raises(ConfigError, match="no search option"):
        index.set_search_options(nprobe=4)


def test_retriever_contract(tmp_path):
    filled().save(tmp_path / "idx")
    retriever = IndexRetriever.from_pretrained(tmp_path / "idx", expect_encoder="clip")
    assert isinstance(retriever, Retriever) and retriever.dim == DIM and retriever.encoder == "clip"
    queries = torch.from_numpy(vectors(300)[[5, 9]]) * 3.0  # [B, dim], not normalised
    hits = retriever.search(queries, k=2)
    assert [h[0].uri for h in hits] == ["file://item5.png", "file://item9.png"]
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(MediaError, match=r"\[B, 16\]"):
        retriever.search(torch.zeros(DIM), k=1)


def test_retriever_through_registry_path(tmp_path):
    from anymodal.registry import resolve

    filled("ivf", nlist=8, nprobe=1).save(tmp_path / "idx")
    cls = resolve("decoders", "decoders.retrieval:IndexRetriever")
    retriever = cls.from_pretrained(str(tmp_path / "idx"), nprobe=8)  # search options at load time
    assert retriever.index.options["nprobe"] == 8
    hits = retriever.search(torch.from_numpy(vectors(300)[:4]), k=3)
    assert [h[0].uri for h in hits] == [f"file://item{i}.png" for i in range(4)]


def test_cpu_fallback_says_so_once(caplog):
    import faiss

    import anymodal.index as module

    if faiss.get_num_gpus() > 0:
        pytest.skip("a faiss GPU build with a device is installed")
    module._gpu_count.cache_clear()
    with caplog.at_level("INFO", logger="anymodal.index"):
        first = VectorIndex.create(DIM, "ivf", nlist=4)
        VectorIndex.create(DIM, "flat")
        forced = VectorIndex.create(DIM, "flat", device="gpu")
    assert not first.on_gpu and not forced.on_gpu
    assert caplog.text.count("faiss sees no GPU") == 1
    assert "device='gpu' was asked for" in caplog.text
    with pytest.raises(ConfigError, match="device"):
        VectorIndex.create(DIM, "flat", device="tpu")


@pytest.mark.gpu
@pytest.mark.parametrize("kind,options", KINDS, ids=[k for k, _ in KINDS])
def test_gpu_index_round_trip(tmp_path, kind, options):
    import faiss

    if faiss.get_num_gpus() == 0:
        pytest.skip("needs a faiss GPU build and a CUDA device")
    index = filled(kind, **options)  # device="auto": on the GPU where faiss has a GPU version of the kind
    queries = vectors(300)[:20]
    assert [h[0].uri for h in index.search(queries, 1)] == [f"file://item{i}.png" for i in range(20)]
    index.save(tmp_path / "idx")
    cpu = VectorIndex.load(tmp_path / "idx", device="cpu")
    assert [h[0].uri for h in cpu.search(queries, 1)] == [f"file://item{i}.png" for i in range(20)]


def test_an_index_carries_its_media_under_relative_uris(tmp_path):
    index = VectorIndex.create(DIM, "flat", encoder="clip")
    index.add(vectors(2), [{"uri": "media/a.png", "metadata": {}}, {"uri": "file://elsewhere.png", "metadata": {}}])
    (tmp_path / "idx" / "media").mkdir(parents=True)
    (tmp_path / "idx" / "media" / "a.png").write_bytes(b"png")
    index.save(tmp_path / "idx")
    index.save(tmp_path / "idx")  # a re-save keeps the media it carries
    moved = tmp_path / "moved"
    (tmp_path / "idx").rename(moved)
    found = VectorIndex.load(moved).search(vectors(2), 1)
    assert found[0][0].uri == str(moved.resolve() / "media" / "a.png")
    assert (moved / "media" / "a.png").read_bytes() == b"png"
    assert found[1][0].uri == "file://elsewhere.png"  # absolute uris are left alone
