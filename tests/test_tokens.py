import pytest
import torch

from anymodal.errors import TokenProtocolError
from anymodal.media import Modality
from anymodal.tiny import tiny_tokenizer
from anymodal.tokens import RetrievalSegment, SignalSegment, TextSegment, TokenProtocol, UnitSegment


@pytest.fixture(scope="module")
def protocol(tmp_path_factory):
    tokenizer = tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    protocol = TokenProtocol({Modality.IMAGE: 4, Modality.AUDIO: 2}, retrieval=True, num_units=5)
    assert protocol.attach(tokenizer) == len(protocol.token_strings())
    assert protocol.attach(tokenizer) == 0  # idempotent
    protocol.tokenizer = tokenizer
    return protocol


def test_every_special_token_is_one_id(protocol):
    ids = protocol.ids
    assert len(set(ids.values())) == len(ids)
    assert protocol.tokenizer.encode("a [IMG0][IMG1] b", add_special_tokens=False).count(ids["[IMG0]"]) == 1


def test_parse_orders_text_signals_retrieval_and_units(protocol):
    text = protocol.tokenizer.encode("a red", add_special_tokens=False)
    img, aud = protocol.block_ids(Modality.IMAGE), protocol.block_ids(Modality.AUDIO)
    ids = text + img + text + [protocol.ret_id] + aud + protocol.unit_ids([3, 1, 4])
    segments = protocol.parse(ids)
    kinds = [type(s) for s in segments]
    assert kinds == [TextSegment, SignalSegment, TextSegment, RetrievalSegment, SignalSegment, UnitSegment]
    assert segments[1].positions == list(range(len(text), len(text) + 4))
    assert segments[3].position == 2 * len(text) + 4
    assert segments[5].units == [3, 1, 4]


def test_parse_drops_incomplete_blocks_and_stray_tokens(protocol):
    img = protocol.block_ids(Modality.IMAGE)
    segments = protocol.parse(img[:2] + [img[3]])
    assert segments == []


def test_units_round_trip_and_range(protocol):
    ids = protocol.unit_ids([0, 4, 4, 2])
    assert protocol.parse(ids) == [UnitSegment([0, 4, 4, 2])]
    with pytest.raises(TokenProtocolError, match="outside 0..4"):
        protocol.unit_ids([5])


def test_logits_processor_forces_the_rest_of_a_block(protocol):
    img = protocol.block_ids(Modality.IMAGE)
    vocab = max(protocol.ids.values()) + 10
    proc = protocol.logits_processor(max_media=4)
    scores = proc(torch.tensor([[7, img[0]], img[:2]]), torch.zeros(2, vocab))
    assert scores[0].argmax() == img[1] and torch.isinf(scores[0]).sum() == vocab - 1
    assert scores[1].argmax() == img[2]


def test_logits_processor_bans_block_tails_and_placeholders(protocol):
    img = protocol.block_ids(Modality.IMAGE)
    vocab = max(protocol.ids.values()) + 10
    scores = protocol.logits_processor(max_media=4)(torch.tensor([[7]]), torch.zeros(1, vocab))
    assert torch.isinf(scores[0, img[1:]]).all()
    assert torch.isinf(scores[0, protocol.placeholder_id(Modality.IMAGE)])
    assert not torch.isinf(scores[0, img[0]]) and not torch.isinf(scores[0, protocol.ret_id])


def test_logits_processor_caps_media_and_counts_the_prefill(protocol):
    img = protocol.block_ids(Modality.IMAGE)
    vocab = max(protocol.ids.values()) + 10
    full = protocol.logits_processor(max_media=1)(torch.tensor([img + [7]]), torch.zeros(1, vocab))
    assert torch.isinf(full[0, img[0]]) and torch.isinf(full[0, protocol.ret_id])
    prefilled = protocol.logits_processor(max_media=1, prefill_ids=[[img[0]]])
    empty = torch.zeros(1, 0, dtype=torch.long)
    first = prefilled(empty, torch.zeros(1, vocab))
    assert first[0].argmax() == img[1]  # the prefill opened a block: it continues
