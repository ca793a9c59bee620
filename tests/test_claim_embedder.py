"""The claim check's own embedder (PHOBOS_CLAIM_EMBEDDER): chosen with its calibrated thresholds, loaded
from its pinned wheels, and used by the worker."""

from __future__ import annotations

from core.claims import ClaimThresholds, check_answer
from core.embedders import choose_embedder
from core.model_settings import ModelSettings
from phobos.runtime import claim_embedder_choice, claim_thresholds, load_claim_embedder
from phobos.settings import Settings
from workers.environment import WorkerEnvironment
from workers.settings import WorkerSettings

SOURCES = ["(facts.pdf, p. 3) Volcano field guide. Mount Kessler last erupted in 1931. Its crater lake is "
           "acidic and turquoise, and sulphur vents on the east flank make the air smell of rotten eggs."]


def test_the_claim_check_has_its_own_embedder_and_thresholds(embedder) -> None:  # type: ignore[no-untyped-def]
    settings = Settings()
    assert claim_embedder_choice(settings) == "mpnet"
    mpnet = choose_embedder("mpnet")
    assert claim_thresholds(settings) == ClaimThresholds(mpnet.claim_min_similarity, mpnet.claim_min_coverage,
                                                         mpnet.claim_paraphrase_similarity)
    # Empty: the documents' embedder, with the thresholds calibrated for it; no second model is loaded.
    same = Settings(models=ModelSettings(claim_embedder=""))
    assert claim_embedder_choice(same) == "minilm"
    assert claim_thresholds(same) == choose_embedder("minilm").claim_thresholds() == ClaimThresholds()
    assert load_claim_embedder(same, embedder) is embedder
    assert load_claim_embedder(Settings(models=ModelSettings(claim_embedder="minilm")), embedder) is embedder


def test_mpnet_from_its_wheels_marks_an_invented_sentence_and_passes_a_true_one(embedder) -> None:  # type: ignore[no-untyped-def]
    settings = Settings()
    checker = load_claim_embedder(settings, embedder)
    assert checker is not embedder and checker.dim == 768  # all-mpnet-base-v2, unpacked from the pinned parts
    answer = ("Mount Kessler last erupted in 1931 [1]. "
              "The lake is stocked with rainbow trout every spring by the park rangers [1].")
    check = check_answer(answer, SOURCES, checker, claim_thresholds(settings))
    true, invented = check.claims
    assert true.supported and not invented.supported
    assert check.support_share == 0.5


def test_the_worker_environment_carries_the_claim_embedder(redis_client, embedder) -> None:  # type: ignore[no-untyped-def]
    from core.registry import ModelRegistry

    limits = ClaimThresholds(0.6, 0.5, 0.8)
    checker = load_claim_embedder(Settings(), embedder)
    env = WorkerEnvironment.build(redis_client, embedder, {}, ModelRegistry({}), WorkerSettings(),
                                  claim_embedder=checker, claim_thresholds=limits)
    assert env.claim_embedder is checker and env.claim_thresholds == limits
    alone = WorkerEnvironment.build(redis_client, embedder, {}, ModelRegistry({}), WorkerSettings())
    assert alone.claim_embedder is None and alone.claim_thresholds is None  # the documents' embedder, defaults


def test_missing_claim_embedder_wheels_are_one_sentence_naming_the_fix(tmp_path, monkeypatch, embedder) -> None:  # type: ignore[no-untyped-def]
    import importlib
    import sys

    import pytest

    from phobos.commands.common import UsageError

    # As on a machine where the mpnet parts were never installed: no distribution on the path holds them.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    importlib.invalidate_caches()
    # Nothing unpacked there yet; only the extractive model, whose weights are not files.
    settings = Settings(state_dir=tmp_path, worker=WorkerSettings(worker_models="extractive"))
    with pytest.raises(UsageError, match=r"claim check's embedder mpnet cannot be loaded: .*PHOBOS_CLAIM_EMBEDDER="):
        load_claim_embedder(settings, embedder)
    with pytest.raises(SystemExit, match=r"^make run: the claim check's embedder mpnet cannot be loaded"):
        from phobos.runtime import prepare_weights

        prepare_weights(settings)
