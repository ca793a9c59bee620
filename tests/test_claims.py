"""The claim check (core/claims/) and what a reader sees of it (core/claim_marks.py), with the real embedder."""

from __future__ import annotations

import json

import pytest

from core.claim_marks import FALLBACK_INTRO, MARK, remembered, render, review
from core.claims import ClaimThresholds, check_answer, exact_terms, split_sentences
from core.documents import Chunk, Hit
from core.rag import Answer, citations_for
from jobs.protocol import ClaimSupport, ReplyEvent, ReplyType

LIGHTHOUSE = ("The Skerry Point lighthouse lamp is cleaned every Tuesday by the keeper. Its lens was made in 1872 "
              "by a glassworks in Birmingham and weighs four tonnes.")
VOLCANO = ("Mount Kessler last erupted in 1931. Its crater lake is acidic and turquoise, and sulphur vents on the "
           "east flank make the air smell of rotten eggs.")
R_OPTIONS = ("Command-line options: R --vanilla combines --no-save, --no-restore and --no-environ. "
             "Use the function is.null() to test for NULL; the file .Rprofile in the home directory is read "
             "at start-up unless R_PROFILE_USER points elsewhere.")


def hit(text: str, page: int, name: str = "facts.pdf") -> Hit:
    return Hit(Chunk("doc", name, text, page, page, page), 0.5)


# --- splitting ---

def test_sentences_split_at_full_stops_keeping_citations_with_their_sentence() -> None:
    assert split_sentences("The lamp is cleaned on Tuesdays [1]. The lens weighs four tonnes. [2] It was made "
                           "in 1872.") == ["The lamp is cleaned on Tuesdays [1].", "The lens weighs four tonnes. [2]",
                                           "It was made in 1872."]


def test_decimals_abbreviations_and_inline_code_do_not_end_a_sentence() -> None:
    text = "Version 2.5 is needed, e.g. on Debian. Call `x.y. Z` first. Prof. Smith agrees! Does it? Yes."
    assert split_sentences(text) == ["Version 2.5 is needed, e.g. on Debian.", "Call `x.y. Z` first.",
                                     "Prof. Smith agrees!", "Does it?", "Yes."]


def test_an_ellipsis_or_a_comma_after_a_full_stop_does_not_end_the_sentence() -> None:
    assert split_sentences("The weights at lag 1, . . . , n -1. Each is estimated (p. 5). Done.") == [
        "The weights at lag 1, . . . , n -1.", "Each is estimated (p. 5).", "Done."]


def test_list_items_lines_and_code_blocks_are_units_of_their_own() -> None:
    text = ("Steps:\n- Install R\n* Run `R CMD INSTALL pkg`\n1. Restart the session [2]\n"
            "```r\nx <- 1. \ny <- 2\n```\nDone.")
    assert split_sentences(text) == ["Steps:", "Install R", "Run `R CMD INSTALL pkg`", "Restart the session [2]",
                                     "```r\nx <- 1. \ny <- 2\n```", "Done."]


def test_a_citation_at_the_start_of_a_line_counts_for_the_sentences_on_it(embedder) -> None:
    check = check_answer("[2] Mount Kessler last erupted in 1931.", [LIGHTHOUSE, VOLCANO], embedder)
    assert check.sentences[0].cited == (2,)


R_OUTPUT = ("Below is a function that sums a vector. res <- fx(seq(1, 10, by=0.5)) res # [1] 104.5 One might "
            "also read the code from a file.")


def test_bracketed_numbers_quoted_from_a_source_are_not_citations(embedder) -> None:
    # R prints "[1]" before a result; quoted under "[2]", it must not send the check to source 1.
    answer = "[2] Below is a function that sums a vector. res <- fx(seq(1, 10, by=0.5)) res # [1] 104.5"
    check = check_answer(answer, [LIGHTHOUSE, R_OUTPUT], embedder)
    assert [s.cited for s in check.sentences] == [(2,)]
    assert not check.unsupported
    assert check.sentences[0].text.endswith("# [1] 104.5")  # what the reader sees keeps the quoted text


def test_a_citation_the_answer_writes_is_still_one_next_to_quoted_numbers(embedder) -> None:
    answer = "The lens was made in 1872 [1]. The sum res # [1] 104.5 comes from fx [2]."
    check = check_answer(answer, [LIGHTHOUSE, R_OUTPUT], embedder)
    assert [s.cited for s in check.sentences] == [(1,), (2,)]
    assert citations_for(answer, [hit(LIGHTHOUSE, 3), hit(R_OUTPUT, 7, "r.pdf")])[0].pages == (3,)


def test_citations_next_to_each_other_stay_citations_when_a_source_has_the_same_pair() -> None:
    paper = "Earlier studies [1] and [2] measured the lens. " + LIGHTHOUSE
    answer = "The lens weighs four tonnes, as [1] and [2] say."
    assert [c.pages for c in citations_for(answer, [hit(paper, 3), hit(LIGHTHOUSE, 4)])] == [(3,), (4,)]


def test_only_the_citations_an_answer_writes_name_its_sources() -> None:
    answer = "[2] res <- fx(seq(1, 10, by=0.5)) res # [1] 104.5"
    assert [c.file_name for c in citations_for(answer, [hit(LIGHTHOUSE, 3), hit(R_OUTPUT, 7, "r.pdf")])] == ["r.pdf"]


# --- exact terms ---

def test_numbers_identifiers_options_quotes_files_and_urls_are_exact_terms() -> None:
    terms = {(t.kind, t.text) for t in exact_terms(
        'Run R --vanilla or -q, call is.null() and read_csv, see getOption, "numeric", R-admin.pdf, '
        '/usr/lib/R, https://cran.r-project.org and 1,000 or 2.5% [3].')}
    assert terms == {("option", "--vanilla"), ("option", "-q"), ("call", "is.null"), ("snake", "read_csv"),
                     ("camel", "getOption"), ("quote", "numeric"), ("dotted", "R-admin.pdf"), ("path", "/usr/lib/R"),
                     ("url", "https://cran.r-project.org"), ("number", "1,000"), ("number", "2.5%")}


def test_a_missing_number_makes_a_sentence_unsupported(embedder) -> None:
    check = check_answer("Its lens was made in 1873 by a glassworks in Birmingham [1].", [LIGHTHOUSE], embedder)
    (sentence,) = check.sentences
    assert not sentence.supported and sentence.missing_terms == ("1873",)
    assert "1873" in sentence.reason


def test_missing_identifiers_and_options_make_a_sentence_unsupported(embedder) -> None:
    check = check_answer("R --vanilla combines --no-save and --no-profile [1]. Use is.nil() to test for NULL [1].",
                         [R_OPTIONS], embedder)
    assert [s.missing_terms for s in check.sentences] == [("--no-profile",), ("is.nil",)]
    assert check.support_share == 0.0


def test_terms_match_through_pdf_dashes_curly_quotes_and_number_words(embedder) -> None:
    source = "R \u2013vanilla combines \u2013no-save and \u201cnumeric\u201d modes; twelve hives."
    check = check_answer('R --vanilla combines --no-save and "numeric" modes; 12 hives [1].', [source], embedder)
    assert check.sentences[0].missing_terms == ()


# --- meaning ---

def test_a_paraphrase_of_its_source_is_supported(embedder) -> None:
    check = check_answer("The keeper cleans the lamp of the Skerry Point lighthouse each Tuesday [1].",
                         [LIGHTHOUSE, VOLCANO], embedder)
    (sentence,) = check.sentences
    assert sentence.supported, sentence
    assert sentence.best_source == 1 and check.support_share == 1.0


def test_a_sentence_its_sources_do_not_say_is_unsupported(embedder) -> None:
    check = check_answer("The lighthouse keeper also runs a small bakery near the harbour [1].",
                         [LIGHTHOUSE, VOLCANO], embedder)
    assert not check.sentences[0].supported


SLIDE = ("Login Nodes Are Shared · Edit, compile, submit jobs · No heavy computation here · Processes over 30 "
         "CPU-minutes are killed · Use an interactive job instead")


def test_a_bullet_of_a_slide_supports_a_sentence_as_a_statement_of_its_own(embedder) -> None:
    # The slide is one line of text without full stops; as a whole it is too far from any one of its bullets.
    check = check_answer("Processes that run for more than 30 CPU-minutes on the login node are killed [1].",
                         [SLIDE], embedder)
    assert check.sentences[0].supported, check.sentences[0].reason


def test_a_true_clause_does_not_carry_an_invented_one_joined_by_a_semicolon(embedder) -> None:
    answer = ("Mount Kessler last erupted in 1931 and its crater lake is acidic and turquoise; the summit is "
              "guarded by a colony of singing penguins that greet every visitor [2].")
    (sentence,) = check_answer(answer, [LIGHTHOUSE, VOLCANO], embedder).sentences
    assert not sentence.supported, sentence


def test_names_inside_a_sentence_and_slash_pairs_are_exact_terms() -> None:
    terms = {(t.kind, t.text) for t in exact_terms(
        "Install it with gcc/clang on Windows or OS X, using Visual Studio 2017 and/or the R console.")}
    assert terms == {("slash", "gcc/clang"), ("name", "Windows"), ("name", "OS X"), ("name", "Visual Studio"),
                     ("number", "2017")}  # "Install" opens the sentence, "R" is one letter, "and/or" no term


def test_an_invented_name_next_to_a_true_statement_makes_it_unsupported(embedder) -> None:
    answer = ("The lighthouse lens was made in 1872 in Birmingham [1]. "
              "The lighthouse lens was made in 1872 in Birmingham by Siemens [1].")
    true, invented = check_answer(answer, [LIGHTHOUSE, VOLCANO], embedder).sentences
    assert true.supported, true
    assert not invented.supported and invented.missing_terms == ("Siemens",)


def test_both_halves_of_a_slash_pair_must_occur(embedder) -> None:
    answer = ("The lamp is cleaned every Tuesday by the keeper/lighthouse staff [1]. "
              "The lens was made by a glassworks in Birmingham/Glasgow [1].")
    both, invented = check_answer(answer, [LIGHTHOUSE], embedder).sentences
    assert both.supported, both
    assert not invented.supported and invented.missing_terms == ("Birmingham/Glasgow",)


def test_a_short_list_item_is_checked_with_the_lead_in_it_completes(embedder) -> None:
    answer = ("The lighthouse lamp is cleaned by:\n- the keeper\n- a crew of penguins\n\n"
              "Mount Kessler:\n- erupted in 1931 [2]")
    checks = check_answer(answer, [LIGHTHOUSE, VOLCANO], embedder).sentences
    by_text = {c.text: c for c in checks}
    assert not by_text["The lighthouse lamp is cleaned by:"].is_claim  # a lead-in claims nothing alone
    assert by_text["the keeper"].is_claim and by_text["the keeper"].supported, by_text["the keeper"]
    assert by_text["a crew of penguins"].is_claim and not by_text["a crew of penguins"].supported
    assert by_text["erupted in 1931 [2]"].supported  # an item with its own terms is a claim by itself


def test_a_sentence_is_checked_against_the_sources_it_cites_only(embedder) -> None:
    answer = "Mount Kessler last erupted in 1931 [1]. Mount Kessler last erupted in 1931, it says."
    check = check_answer(answer, [LIGHTHOUSE, VOLCANO], embedder)
    cites_wrong, cites_none = check.sentences
    assert not cites_wrong.supported and cites_wrong.missing_terms == ("1931", "Kessler")  # a name too
    assert cites_none.supported and cites_none.cited == () and cites_none.best_source == 2


def test_a_citation_out_of_range_counts_as_citing_nothing(embedder) -> None:
    check = check_answer("Mount Kessler last erupted in 1931 [7].", [LIGHTHOUSE, VOLCANO], embedder)
    assert check.sentences[0].cited == () and check.sentences[0].supported


def test_a_repeated_sentence_is_removed(embedder) -> None:
    answer = ("Mount Kessler last erupted in 1931 [2]. Its crater lake is acidic and turquoise [2]. "
              "Mount Kessler last erupted in 1931. Mount  kessler last erupted in 1931 [1]!")
    check = check_answer(answer, [LIGHTHOUSE, VOLCANO], embedder)
    assert check.duplicates_removed == 2 and len(check.sentences) == 2
    assert render(check, "mark") == ("Mount Kessler last erupted in 1931 [2]. "
                                     "Its crater lake is acidic and turquoise [2].")


def test_refusals_greetings_and_lead_ins_are_not_claims(embedder) -> None:
    answer = ("Hello! The documents do not say who built the lighthouse. I don't know. Here is what they say:\n"
              "- Its lens was made in 1872 and weighs four tonnes [1].")
    check = check_answer(answer, [LIGHTHOUSE], embedder)
    assert [s.is_claim for s in check.sentences] == [False, False, False, False, True]
    assert check.support_share == 1.0 and len(check.claims) == 1


def test_a_code_block_is_supported_only_when_its_names_occur_in_the_sources(embedder) -> None:
    good = check_answer("```\nR --vanilla\nis.null(x)\n```", [R_OPTIONS], embedder)
    bad = check_answer("```\nR --vanilla\nread.table(x)\n```", [R_OPTIONS], embedder)
    assert good.sentences[0].supported
    assert not bad.sentences[0].supported and bad.sentences[0].missing_terms == ("read.table",)


def test_thresholds_decide_how_close_a_sentence_must_be(embedder) -> None:
    answer = "The lighthouse lens is heavy [1]."
    assert check_answer(answer, [LIGHTHOUSE], embedder, ClaimThresholds(min_similarity=0.0, min_coverage=0.0,
                                                                         paraphrase_similarity=1.1)).sentences[0].supported
    assert not check_answer(answer, [LIGHTHOUSE], embedder, ClaimThresholds(min_similarity=0.99, min_coverage=0.0,
                                                                             paraphrase_similarity=1.1)).sentences[0].supported


def test_an_empty_answer_or_no_sources_checks_nothing(embedder) -> None:
    assert check_answer("", [LIGHTHOUSE], embedder).sentences == ()
    unsourced = check_answer("Mount Kessler last erupted in 1931.", [], embedder)
    assert not unsourced.sentences[0].supported and unsourced.support_share == 0.0


# --- what the reader sees ---

INVENTED = "The lighthouse keeper also runs a bakery that sells 40 loaves a day"


def answer_of(text: str, hits: list[Hit]) -> Answer:
    return Answer(text, citations_for(text, hits), tuple(hits), grounded=True)


def test_mark_puts_a_sign_before_each_unsupported_sentence_and_counts_them(embedder) -> None:
    hits = [hit(LIGHTHOUSE, 1), hit(VOLCANO, 3)]
    answer = answer_of(f"The lamp is cleaned every Tuesday by the keeper [1]. {INVENTED} [1].", hits)
    checked = review(answer, "Who cleans the lamp?", embedder, "mark")
    assert checked is not None and not checked.is_fallback
    assert checked.text == (f"The lamp is cleaned every Tuesday by the keeper [1]. {MARK} {INVENTED} [1].\n\n"
                            f"{MARK} 1 of 2 sentences was not found in the sources and was marked {MARK}.")
    assert checked.citations == answer.citations


def test_drop_leaves_unsupported_sentences_out_and_says_how_many(embedder) -> None:
    hits = [hit(LIGHTHOUSE, 1), hit(VOLCANO, 3)]
    answer = answer_of(f"- The lamp is cleaned every Tuesday [1].\n- {INVENTED} [2].", hits)
    checked = review(answer, "Who cleans the lamp?", embedder, "drop")
    assert checked is not None
    assert checked.text == ("- The lamp is cleaned every Tuesday [1].\n\n"
                            f"{MARK} 1 of 2 sentences was not found in the sources and was left out.")
    assert [c.pages for c in checked.citations] == [(1,)]  # the dropped sentence's citation went with it


def test_off_and_ungrounded_answers_are_not_checked(embedder) -> None:
    hits = [hit(LIGHTHOUSE, 1)]
    assert review(answer_of(INVENTED, hits), "q", embedder, "off") is None
    assert review(Answer(INVENTED, (), (), grounded=False), "q", embedder, "mark") is None
    with pytest.raises(ValueError, match="mark, drop, off"):
        review(answer_of(INVENTED, hits), "q", embedder, "shout")


def test_an_answer_with_no_supported_sentence_becomes_a_quote_of_the_closest_passages(embedder) -> None:
    hits = [hit(LIGHTHOUSE, 1, "light.pdf"), hit(VOLCANO, 3, "volcano.pdf")]
    answer = answer_of(f"{INVENTED} [2]. The volcano is made of cheese [1].", hits)
    checked = review(answer, "What colour is the crater lake of Mount Kessler?", embedder, "mark")
    assert checked is not None and checked.is_fallback
    intro, first, second = checked.text.split("\n")
    assert intro == FALLBACK_INTRO
    assert first.startswith("> ") and "turquoise" in first and first.endswith("[1]")
    assert second.startswith("> ") and second.endswith("[2]")
    assert [c.file_name for c in checked.citations] == ["volcano.pdf", "light.pdf"]
    assert checked.check.support_share == 0.0
    assert remembered(checked) == f"{first}\n{second}"  # the next prompt does not learn the intro
    assert not check_answer(FALLBACK_INTRO, [VOLCANO], embedder).sentences[0].is_claim


def test_the_final_event_carries_the_support_data_as_json(embedder) -> None:
    check = check_answer("Hello! Mount Kessler erupted in 1931 [1].", [LIGHTHOUSE], embedder)
    claims = ClaimSupport.of(check, "mark")
    event = ReplyEvent(job_id="j", type=ReplyType.FINAL, text="t", claims=claims)
    raw = json.loads(event.to_json())
    assert raw["claims"]["sentences"][1] == {"text": "Mount Kessler erupted in 1931 [1].", "supported": False,
                                             "cited": [1], "reason": raw["claims"]["sentences"][1]["reason"],
                                             "is_claim": True}
    back = ReplyEvent.from_json(event.to_json())
    assert back == event and back.claims is not None and back.claims.unsupported == 1
    assert ReplyEvent.from_json(ReplyEvent(job_id="j", type=ReplyType.FINAL).to_json()).claims is None



def test_the_check_reports_its_share_verdicts_and_cost_as_metrics() -> None:
    from prometheus_client import REGISTRY

    from core.scope import Scope
    from jobs.protocol import Job, JobKind
    from telemetry.metrics import JobMetrics

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"model": "claims-test", **labels}) or 0.0

    observed = JobMetrics(Job("j", JobKind.ASK, Scope("console", "t", "c"), "u", "replies"))
    observed.model = "claims-test"
    observed.claims_checked(support_share=0.5, claims=4, unsupported=2, check_s=0.2)
    assert sample("phobos_answer_support_share_count") == 1 and sample("phobos_answer_support_share_sum") == 0.5
    assert sample("phobos_claim_sentences_total", verdict="supported") == 2
    assert sample("phobos_claim_sentences_total", verdict="unsupported") == 2
    assert sample("phobos_claim_check_seconds_sum") == pytest.approx(0.2)


def test_the_quote_fallback_skips_titles_and_quotes_twice_from_a_single_source(embedder) -> None:
    from core.claims import closest_passages

    source = ("Volcano field guide. " + VOLCANO + " Visitors must stay on the marked path around the rim. "
              "Guided tours of the crater leave from the car park every morning at nine.")
    quotes = closest_passages("What colour is the crater lake of Mount Kessler?", [source], embedder, 2)
    assert len(quotes) == 2 and all(number == 1 for number, _ in quotes)
    assert "turquoise" in quotes[0][1]
    assert all(quote != "Volcano field guide." for _, quote in quotes)
    assert quotes[0][1] not in quotes[1][1] and quotes[1][1] not in quotes[0][1]
