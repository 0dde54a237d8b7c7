"""The Python API: `zenlm.load(...)` returns an `LM` that tokenizes, scores and generates."""

from __future__ import annotations

import ctypes
import functools
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zenlm.config import ModelConfig, from_hf_config
from zenlm.errors import CheckpointError
from zenlm.generate import GenerationConfig, GenerationResult, generate_batch, stream_batch
from zenlm.generate.beam import beam_search
from zenlm.generate.compile import compile_decoding
from zenlm.generate.defaults import sampling_defaults
from zenlm.io.hf import load_hf_model, read_config, refuse_pickle
from zenlm.io.resolve import resolve_model
from zenlm.models import DecoderLM, Seq2SeqLM
from zenlm.nn.cpu_attention import use_cpu_attention
from zenlm.quant import QUANTIZE_MODES, apply_quantization, quantize_part
from zenlm.quant import quantize as quantize_model
from zenlm.quant.auto import resolve_mode
from zenlm.tokenizer import Message, Tokenizer


@dataclass
class Completion:
    """The text of one generated sequence, and its tokens and timings."""

    text: str
    result: GenerationResult


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LM:
    """A language model with its tokenizer.

    An encoder-decoder (T5, BART, Marian) generates from a source: its prompt is the
    source text (encoded as the tokenizer does, no chat template), and `generate`,
    `complete` and `stream` return the target text.

    Args:
        model: The network.
        tokenizer: Its tokenizer (None for weights-only folders: `logits` still works).
        source: Where it was loaded from.
        load_s: Seconds the load took.
    """

    def __init__(
        self, model: DecoderLM, tokenizer: Tokenizer | None, source: str = "", load_s: float = 0.0
    ) -> None:
        self.model = model
        self._tokenizer = tokenizer
        self.source = source
        self.load_s = load_s

    @property
    def config(self) -> ModelConfig:
        """The model's configuration."""
        return self.model.config

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer (ValueError if the checkpoint had none)."""
        if self._tokenizer is None:
            raise ValueError(f"{self.source}: this checkpoint has no tokenizer files")
        return self._tokenizer

    @torch.inference_mode()
    def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V) float32 for ids (B, T); mask (B, T) marks real tokens.

        Raises:
            TypeError: the model is an encoder (no next-token head; see `embed`).
        """
        if isinstance(self.model, Seq2SeqLM):
            raise TypeError(
                f"{self.source} is an encoder-decoder: its logits need a source; call "
                "lm.model(src_ids, tgt_ids), or generate from the source text"
            )
        if not isinstance(self.model, DecoderLM):
            raise TypeError(
                f"{self.source} is an encoder: it has no next-token logits; use "
                "lm.embed(texts) for sentence vectors or fine-tune a task head"
            )
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.ndim == 1:
            ids = ids[None]
        return self.model(ids, attention_mask=attention_mask).float()

    def generate_ids(self, prompt_ids: Sequence[int], **options: Any) -> GenerationResult:
        """Generate from token ids; options are GenerationConfig fields."""
        return self.complete([list(prompt_ids)], **options)[0].result

    def complete(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], **options: Any
    ) -> list[Completion]:
        """Generate for a batch of prompts (text or token ids) at once.

        Options are GenerationConfig fields (max_new_tokens, temperature, top_k, top_p,
        min_p, penalties, seed, stop, stop_token_ids, num_return_sequences, logprobs,
        top_logprobs, num_beams, length_penalty, early_stopping); left out, they take
        GenerationConfig's defaults (greedy). Stop strings end a sequence at the text
        level; the returned text stops before them.

        Returns:
            One Completion per prompt x num_return_sequences, in order (with
            num_beams > 1: the best num_return_sequences beams of each prompt).
        """
        config = self._config(options)
        ids = [self.encode_prompt(p) if isinstance(p, str) else list(p) for p in prompts]
        if config.num_beams > 1:
            if config.stop:
                raise ValueError("stop strings are not supported with num_beams > 1 "
                                 f"(got stop={list(config.stop)!r}); use stop_token_ids")
            text = self.decode_new if self._tokenizer is not None else lambda r: ""
            return [Completion(text(r), r) for prompt in ids
                    for r in beam_search(self.model, prompt, config)]
        return [Completion(r.text, r)
                for r in generate_batch(self.model, ids, config, self._tokenizer)]

    def stream(self, prompt: str | Sequence[int], **options: Any) -> Iterator[str]:
        """Yield the text of one generation as it is produced (UTF-8 safe, stop-aware).

        Raises:
            ValueError: num_beams > 1 (beam search knows its best sequence only at the end:
                use `generate` or `complete`), or an invalid option.
        """
        config = self._config(options)
        if config.num_beams > 1:
            raise ValueError(f"stream cannot use num_beams={config.num_beams}: beam search "
                             "knows its best sequence only at the end; use generate or complete")
        ids = self.encode_prompt(prompt) if isinstance(prompt, str) else list(prompt)
        for events in stream_batch(self.model, [ids], config, self.tokenizer):
            for event in events:
                if event.row == 0 and event.text:
                    yield event.text

    def generate(self, prompt: str, **options: Any) -> str:
        """Continue `prompt` and return the new text, without the stop token or string.

        Options are GenerationConfig fields, as for `complete` (num_beams included).
        """
        return self.complete([prompt], **options)[0].text

    def chat(self, messages: Sequence[Message], **options: Any) -> str:
        """The assistant's reply to `messages`, rendered with the model's chat template."""
        return self.complete([self.encode_chat(messages)], **options)[0].text

    def sampling_defaults(self, mode: str = "model") -> dict[str, Any]:
        """What requests and commands use for sampling parameters they leave out.

        See `zenlm.generate.defaults`: the model's generation_config.json, else
        zenlm's default chain ("model"), or OpenAI's temperature 1 ("openai").
        """
        folder = Path(self.source) if self.source and Path(self.source).is_dir() else None
        return sampling_defaults(mode, folder)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a plain prompt (ValueError if it is empty)."""
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
        return self.tokenizer.encode(prompt)

    def encode_chat(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of `messages` rendered with the chat template and a generation prompt.

        An encoder-decoder has no chat template: its source is the last user message
        (system messages and earlier turns are not read), so `chat`, `zenlm generate
        --chat` and the server's chat route (the playground) translate or summarize
        what the user said last.

        Raises:
            ValueError: an encoder-decoder is given no user message.
        """
        if isinstance(self.model, Seq2SeqLM):
            said = [m["content"] for m in messages if m["role"] == "user"]
            if not said:
                raise ValueError(f"{self.source} is an encoder-decoder: its source is the last "
                                 "user message, and the messages hold none")
            return self.encode_prompt(said[-1])
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        # The template writes BOS itself when the model wants one.
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode_new(self, result: GenerationResult) -> str:
        """Text of generated tokens, without a final stop token."""
        ids = result.token_ids
        if result.finish_reason == "stop" and ids and ids[-1] in self.stop_token_ids():
            ids = ids[:-1]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _config(self, options: dict[str, Any]) -> GenerationConfig:
        options = dict(options)
        options.setdefault("stop_token_ids", self.stop_token_ids())
        if isinstance(options.get("stop"), str):
            options["stop"] = [options["stop"]]
        config = GenerationConfig(**options)
        config.validate()
        return config

    def embed(
        self, texts: Sequence[str], *, batch_size: int = 32, normalize: bool = True
    ) -> torch.Tensor:
        """Sentence embeddings (N, d_model) float32, L2-normalised.

        Mean pooling for encoders, the last token for decoders; see
        `zenlm.embed.embed_texts`.
        """
        from zenlm.embed import embed_texts

        return embed_texts(self.model, self.tokenizer, texts, batch_size=batch_size,
                           normalize=normalize)

    def stop_token_ids(self) -> tuple[int, ...]:
        """Ids that end generation: the tokenizer's EOS and config.json's eos_token_id(s)."""
        ids: set[int] = set()
        eos = self.config.eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self._tokenizer is not None and self._tokenizer.eos_token_id is not None:
            ids.add(self._tokenizer.eos_token_id)
        return tuple(sorted(ids))


def load(
    model: str | Path,
    dtype: torch.dtype | str | None = None,
    quantize: str | None = "auto",
    compile: bool = False,
) -> LM:
    """Load a model folder, a .gguf file, a short name or a hub id.

    By default a decoder is prepared for fast inference on this CPU (`quantize="auto"`:
    int4 with zenlm's kernel on AVX2 / AVX-512, else bf16 where bfloat16 is native, else
    float32; see zenlm.quant.auto), and every model gets the CPU attention kernels
    (zenlm.nn.cpu_attention). Pass `quantize=None` for the model exactly as stored and
    built, in float32 with PyTorch's SDPA: for training, or to compare logits with
    another library.

    Args:
        model: See `zenlm.io.resolve.resolve_model`.
        dtype: Parameter dtype: torch.float32, torch.bfloat16, or their names. Giving
            one means "these weights as they are": `auto` then leaves them alone.
        quantize: "auto", "none" (fused float32), "bf16", "int8" or "int4" (see
            zenlm.quant.quantize); None leaves the model as loaded (no inference
            transform at all). Encoders are never quantized.
        compile: torch.compile the decode step (faster decoding after a one-off
            compilation; falls back to eager if compiling fails).

    Raises:
        CheckpointError: the files are missing, corrupt, pickles, or inconsistent.
        UnsupportedModelError: the architecture is not implemented.
    """
    start = time.perf_counter()
    torch_dtype = _dtype(dtype)
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, got {quantize!r}")
    path = resolve_model(model)
    refuse_pickle(path)
    is_gguf = path.suffix.lower() == ".gguf"
    if not (path.is_dir() or is_gguf):
        raise CheckpointError(
            f"{path}: not a model folder or a .gguf file (for a .safetensors file, "
            "give the folder holding it and its config.json)"
        )
    decoder = is_gguf or from_hf_config(read_config(path)).arch == "decoder"
    for_inference = quantize is not None  # None: as stored, e.g. to train
    if quantize == "auto" and (dtype is not None or not decoder):
        quantize = None
    mode = resolve_mode(quantize) if decoder else None
    # Each part of a decoder is converted as soon as its weights are read, so a large
    # model never holds all its float32 weights at once (a 1.1B int4 load: ~1 GB, not 5).
    prepare = None if mode is None else functools.partial(_convert_part, mode=mode)
    if is_gguf:
        network, tokenizer = _load_gguf(path, torch_dtype, prepare)
    else:
        network = load_hf_model(path, torch_dtype, prepare)
        tokenizer = _folder_tokenizer(path)
    if for_inference:
        use_cpu_attention(network)
    if mode is not None:
        apply_quantization(network, mode)
    elif quantize is not None:  # an explicit mode for a model that is not a decoder
        quantize_model(network, quantize)
    if compile:
        compile_decoding(network.decoder if isinstance(network, Seq2SeqLM) else network)
    release_free_memory()
    return LM(network, tokenizer, str(path), time.perf_counter() - start)


def _convert_part(model: DecoderLM, part: str, mode: str) -> None:
    """Quantize a part just read, then hand its float weights' memory back to the OS."""
    quantize_part(model, part, mode)
    _trim_heap()  # no gc.collect: freed weights hold no cycles, and a collect costs ~0.1 s


def release_free_memory() -> None:
    """Give memory freed during loading back to the OS.

    Loading builds float32 tensors that quantization or casting then drops; glibc
    keeps the freed heap mapped, so without this the process's RSS stays at the
    float32 size while generating with int4 weights.
    """
    gc.collect()
    _trim_heap()


def _trim_heap() -> None:
    """Return glibc's free heap pages to the OS (a no-op elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _load_gguf(
    path: Path, dtype: torch.dtype, prepare_part: Callable[[DecoderLM, str], None] | None
) -> tuple[DecoderLM, Tokenizer]:
    from zenlm.io.gguf import open_gguf
    from zenlm.io.hf import model_from_hf_tensors

    opened = open_gguf(path, dtype=dtype)
    config = from_hf_config(opened.hf_config)
    model = model_from_hf_tensors(config, opened.tensors(), path, dtype, prepare_part)
    return model, opened.tokenizer


def _folder_tokenizer(folder: Path) -> Tokenizer | None:
    if (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file():
        return Tokenizer.from_folder(folder)
    return None


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]
