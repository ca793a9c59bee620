"""Small matching units return their parent passage; the sub-passage reranker and a cross-encoder order hits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.documents import Chunk, Hit
from core.rerank import CrossEncoderReranker, SubPassageReranker, fuse_orders
from core.units import matching_units, parent_scores

FILLER = ("The annual report lists the board members. The canteen menu changes every Monday. "
          "Parking permits are renewed in January. The library closes early on public holidays. ")
LENS = "The lighthouse lens was ground in Birmingham in 1872 and weighs four tonnes. "


def words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def _chunk(ordinal: int, text: str, section: str = "") -> Chunk:
    return Chunk("d", "f.pdf", text, ordinal + 1, ordinal + 1, ordinal, section=section)


def test_units_point_at_their_parent_and_carry_its_section() -> None:
    long = _chunk(0, FILLER * 3, section="Handbook > Office life")
    short = _chunk(1, "One short sentence.")
    texts, parents = matching_units([long, short], words, unit_tokens=20)
    assert len(texts) > 1 and set(parents.tolist()) == {0}  # a chunk that fits in one unit has none
    assert all(t.startswith("Handbook > Office life\n") for t in texts)
    assert all(len(t.split("\n", 1)[1].split()) <= 20 for t in texts)


def test_a_chunk_scores_by_its_best_unit() -> None:
    chunk_scores = np.array([0.2, 0.5], dtype=np.float32)
    best = parent_scores(chunk_scores, np.array([0.9, 0.1, 0.3], dtype=np.float32), np.array([0, 0, 1]))
    assert best.tolist() == [np.float32(0.9), np.float32(0.5)]
    assert chunk_scores.tolist() == [np.float32(0.2), np.float32(0.5)]  # the input is left alone


def test_the_parent_passage_is_returned_for_a_unit_match(embedder) -> None:  # type: ignore[no-untyped-def]
    buried = _chunk(0, FILLER + LENS + FILLER)
    other = _chunk(1, "Trains to the coast leave hourly from platform two. " * 3)
    chunks = [buried, other]
    texts, parents = matching_units(chunks, embedder.count_tokens, unit_tokens=30)
    query = embedder.embed(["Where was the lighthouse lens made?"])[0]
    chunk_vectors = embedder.embed([c.indexed_text() for c in chunks])
    best = parent_scores(chunk_vectors @ query, embedder.embed(texts) @ query, parents)
    assert best[0] > chunk_vectors[0] @ query  # the unit matches better than the whole blurred passage
    top = chunks[int(np.argmax(best))]
    assert top is buried and "Birmingham" in top.text and top.text.startswith("The annual report")


def test_the_sub_passage_reranker_lifts_a_buried_answer(embedder) -> None:  # type: ignore[no-untyped-def]
    answer = _chunk(5, FILLER + LENS + FILLER)
    decoys = [_chunk(i, f"Notice {i}. " + FILLER) for i in range(5)]
    hits = [Hit(c, 0.3) for c in [*decoys, answer]]  # the first stage put the answer last
    reranked = SubPassageReranker(embedder, unit_tokens=30).rerank("Where was the lighthouse lens made?", hits)
    assert sorted(h.chunk.ordinal for h in reranked) == list(range(6))  # nothing lost or added
    assert reranked.index(hits[-1]) < len(hits) - 1


def test_fusion_with_the_first_stage_order_breaks_ties_by_the_first_stage() -> None:
    hits = [Hit(_chunk(i, f"text {i}"), 0.5) for i in range(3)]
    assert [h.chunk.ordinal for h in fuse_orders(hits, np.array([0.1, 0.2, 0.9]))] == [0, 2, 1]
    assert [h.chunk.ordinal for h in fuse_orders(hits, np.array([0.9, 0.2, 0.1]))] == [0, 1, 2]


def _tiny_cross_encoder(folder: Path) -> Path:
    """A random-weight BERT cross-encoder (one relevance logit) with a word-level vocabulary."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set((FILLER + " lens lighthouse trains").lower()
                                                                          .replace(".", " ").split()))]
    (folder / "vocab.txt").write_text("\n".join(vocab))
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_cross_encoder_orders_hits_by_its_own_scores(tmp_path: Path) -> None:
    reranker = CrossEncoderReranker(str(_tiny_cross_encoder(tmp_path)), device="cpu")
    texts = [s.strip() + "." for s in FILLER.split(".") if s.strip()]
    hits = [Hit(_chunk(i, text), 0.5) for i, text in enumerate(texts)]
    scores = reranker.scores("lighthouse lens", [h.chunk.indexed_text() for h in hits])
    reranked = reranker.rerank("lighthouse lens", hits)
    assert [h.chunk.ordinal for h in reranked] == np.argsort(-scores, kind="stable").tolist()
    assert len(set(scores.tolist())) > 1  # the scores really differ, so the order means something
