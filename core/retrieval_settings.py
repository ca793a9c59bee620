"""Retrieval's settings: one section (``settings.retrieval``), from which the worker and ``phobos search``
build their :class:`core.rag.RagEngine` in one place (:meth:`RetrievalSettings.engine`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from core.env_settings import EnvSection, env

if TYPE_CHECKING:
    from core.embedding import Embedder
    from core.index import DocumentStore
    from core.rag import RagEngine


class RetrievalSettings(EnvSection):
    # Passages retrieved for each question.
    top_k: int = Field(5, validation_alias=env("PHOBOS_TOP_K"))
    # Cosine similarity under which a passage is not shown to the model as a source; empty: the
    # embedder's own floor from core/embedders.toml, calibrated on the dev split by bench/retrieval_quality.py.
    min_relevance: float | None = Field(None, validation_alias=env("PHOBOS_MIN_RELEVANCE"))
    # Once a question's best passage clears that floor, the other top passages are shown down to the floor
    # minus this margin: the lexical ranking put them there, and the page that answers often scores just
    # under the floor. Chosen on the dev split by bench/answer_quality.py (0, 0.03, 0.05, 0.1 compared):
    # sources recall 0.82 -> 0.88, citation recall 0.80 -> 0.85, correctness 0.76 -> 0.79.
    passage_margin: float = Field(0.03, ge=0.0, validation_alias=env("PHOBOS_PASSAGE_MARGIN"))
    # The floor for a passage's best sub-passage (a sentence or two, core.rag.RELEVANCE_UNIT_TOKENS): a
    # question whose every passage is under min_relevance is still covered when one of their sentences
    # clears it, and such a passage is shown. Empty: the embedder's own from core/embedders.toml; 0: off.
    min_unit_relevance: float | None = Field(None, ge=0.0, validation_alias=env("PHOBOS_MIN_UNIT_RELEVANCE"))
    # Second stage: "dense:NAME" (the default, dense:mpnet) re-scores the first stage's top 20 with the embedder
    # NAME from core/embedders.toml, added to the first stage's fused score; the claim check's embedder is the
    # same model by default, so one model serves both (dev split: a gold page in the top 5 for 90 -> 93 of 98
    # questions; ~2 s a question on 2 CPU cores at first, less once passages were seen, bench/retrieval_quality.py
    # pipeline +D). None when NAME is PHOBOS_EMBEDDER itself. "" or "off": none. "subpassage": dense
    # re-scoring of ~100-token sub-passages of the top 40 with the documents' embedder. Or a cross-encoder
    # folder or hub id such as cross-encoder/ms-marco-MiniLM-L-6-v2 (for GPU workers).
    reranker: str = Field("dense:mpnet", validation_alias=env("PHOBOS_RERANKER"))

    @field_validator("min_relevance", "min_unit_relevance", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def for_embedder(self, embedder: str) -> RetrievalSettings:
        """This section with its relevance floors decided: PHOBOS_MIN_RELEVANCE and PHOBOS_MIN_UNIT_RELEVANCE
        where set, else the floors calibrated for ``embedder`` (what PHOBOS_EMBEDDER names; core/embedders.toml)."""
        if self.min_relevance is not None and self.min_unit_relevance is not None:
            return self
        from core.embedders import choose_embedder

        spec = choose_embedder(embedder)
        return self.model_copy(update={
            "min_relevance": spec.min_relevance if self.min_relevance is None else self.min_relevance,
            "min_unit_relevance": (spec.min_unit_relevance if self.min_unit_relevance is None
                                   else self.min_unit_relevance)})

    def second_embedder(self) -> str | None:
        """The registry name a "dense:NAME" second stage re-scores with; None for any other reranker."""
        from core.rerank import DENSE_PREFIX

        name = self.reranker.strip()
        if not name.startswith(DENSE_PREFIX):
            return None
        return name[len(DENSE_PREFIX):].strip() or None

    def engine(self, embedder: Embedder, store: DocumentStore, *, history_tokens: int = 512,
               second_embedder: Embedder | None = None) -> RagEngine:
        """The retrieval engine these settings describe; a floor not decided (see :meth:`for_embedder`) shows
        every passage. ``second_embedder``: the model a "dense:NAME" reranker re-scores with (see
        phobos.runtime.load_second_embedder); without one that reranker is left out."""
        from core.rag import RagEngine
        from core.rerank import make_reranker

        reranker = make_reranker(self.reranker.strip(), embedder, second_embedder)
        # The second stage's cosines are judged by the floor calibrated for its own embedder (embedders.toml).
        second_floor = 0.0
        if reranker is not None and (name := self.second_embedder()) is not None:
            from core.embedders import choose_embedder

            second_floor = choose_embedder(name).min_relevance
        return RagEngine(embedder, store, top_k=self.top_k, min_relevance=self.min_relevance or 0.0,
                         passage_margin=self.passage_margin, min_unit_relevance=self.min_unit_relevance or 0.0,
                         history_tokens=history_tokens, reranker=reranker, second_min_relevance=second_floor)
