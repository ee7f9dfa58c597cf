"""``vitrine models quantize``: a text model GGUF to another llama.cpp quantisation, through the
bindings' ``llama_model_quantize`` (the same code as llama.cpp's ``llama-quantize``).

Only the text model is quantized: the vision projector (mmproj) stays as it is and is paired
with every variant of its model, so a projector given here is refused.  Everything decided before
llama.cpp runs (the type's name, the output's name, what the source GGUF holds) is plain Python
and needs no llama.cpp; :func:`quantize` is the one place that loads it.

The GGUF header is read here rather than with ``gguf.GGUFReader``: the reader builds a field per
array element, eight seconds for a 262k-token vocabulary, where skipping the arrays takes a
fraction of a second.  The ``gguf`` package still gives the value types and the file-type names.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import gguf

# The types offered, smallest first: llama-quantize's list less those that need an importance
# matrix (below) and the special-purpose ones (TQ1_0/TQ2_0 for ternary models, MXFP4_MOE for
# expert tensors).  The numbers are llama.h's ``LLAMA_FTYPE_*``, which gguf.LlamaFileType mirrors.
QUANT_TYPES: tuple[str, ...] = (
    "Q2_K",
    "Q3_K_S",
    "Q3_K_M",
    "Q3_K_L",
    "IQ3_XXS",
    "IQ3_XS",
    "IQ3_S",
    "IQ3_M",
    "IQ4_NL",
    "IQ4_XS",
    "Q4_0",
    "Q4_1",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_0",
    "Q5_1",
    "Q5_K_S",
    "Q5_K_M",
    "Q6_K",
    "Q8_0",
    "F16",
    "BF16",
    "F32",
)
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
"""llama-quantize's short names for the medium K-quants."""
NEEDS_IMATRIX = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K_S"})
"""Types llama.cpp will not make without an importance matrix, which this command does not take."""

_FLOAT_TENSORS = frozenset(
    {
        gguf.GGMLQuantizationType.F32,
        gguf.GGMLQuantizationType.F16,
        gguf.GGMLQuantizationType.BF16,
        gguf.GGMLQuantizationType.F64,
        gguf.GGMLQuantizationType.I8,
        gguf.GGMLQuantizationType.I16,
        gguf.GGMLQuantizationType.I32,
        gguf.GGMLQuantizationType.I64,
    }
)
"""Tensor types llama.cpp quantizes without ``allow_requantize``: everything else is quantized."""

# A quantisation tag at the end of a file's stem, after "-", "_" or ".": Q4_K_M, q8_0, IQ3_XXS,
# F16, BF16, unsloth's UD-Q4_K_XL.  Split files end in -00001-of-00003, dropped first.
_TAG = re.compile(
    r"(?<=[-_.])(?:UD-)?(?:I?Q[1-8](?:_[0-9A-Z]{1,3}){0,2}|TQ[12]_0|B?F16|F32|MXFP4(?:_MOE)?)$",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})$")
_LIVE_CALLBACKS: list[object] = []


class QuantizeError(Exception):
    """What the user has to fix, in one line (``vitrine: error: ...``, exit 1)."""


class UnknownType(QuantizeError):
    """``--type`` names no type this command makes: a usage error (exit 2)."""


@dataclass(frozen=True)
class QuantType:
    name: str
    """llama.cpp's name, e.g. ``Q5_K_M``: also the tag in the default output name."""
    ftype: int
    """llama.h's ``LLAMA_FTYPE_*`` value."""


def ftype_name(ftype: int) -> str:
    """``15`` -> ``Q4_K_M``: a ``general.file_type`` as llama.cpp names it."""
    try:
        name = gguf.LlamaFileType(ftype).name
    except ValueError:
        return f"file type {ftype}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _ftype(name: str) -> int:
    member = "ALL_F32" if name == "F32" else f"MOSTLY_{name}"
    return int(gguf.LlamaFileType[member])


def parse_type(text: str) -> QuantType:
    """``q5_k_m`` -> ``QuantType("Q5_K_M", 17)``; any case, llama-quantize's aliases too."""
    name = text.strip().upper().replace("-", "_")
    name = ALIASES.get(name, name)
    if name in NEEDS_IMATRIX:
        raise UnknownType(
            f"{name} needs an importance matrix (llama.cpp's llama-imatrix), which this command "
            "does not take; the smallest type it makes is Q2_K (valid: "
            f"{', '.join(QUANT_TYPES)})"
        )
    if name not in QUANT_TYPES:
        raise UnknownType(f"unknown type {text!r} (valid: {', '.join(QUANT_TYPES)})")
    return QuantType(name, _ftype(name))


def default_output(src: Path, qtype: QuantType) -> Path:
    """The source's name with its quantisation tag replaced (or added), beside it:
    ``gemma-3-4b-it-Q4_K_M.gguf`` -> ``gemma-3-4b-it-Q5_K_M.gguf``, ``model.gguf`` ->
    ``model-Q5_K_M.gguf``.  A split source's part number is dropped: the output is one file."""
    stem = src.name[: -len(".gguf")] if src.name.lower().endswith(".gguf") else src.name
    stem = _SPLIT.sub("", stem)
    tagged, found = _TAG.subn(qtype.name, stem)
    if not found:
        tagged = f"{stem}-{qtype.name}"
    return src.with_name(f"{tagged}.gguf")


@dataclass(frozen=True)
class GgufInfo:
    """What the quantize checks need from a GGUF's header."""

    architecture: str | None
    file_type: int | None
    """``general.file_type`` (llama.h's ``LLAMA_FTYPE_*``); None when the file does not say."""
    clip_keys: bool
    """Any ``clip.*`` key: a vision projector whatever its architecture says."""
    tensor_types: frozenset[int]
    split_count: int = 1

    @property
    def is_projector(self) -> bool:
        return self.architecture == "clip" or self.clip_keys

    @property
    def quantized_tensor_types(self) -> list[str]:
        """The quantized tensor types it holds (``Q4_K``, ``Q6_K``...), sorted; none for F32/F16."""
        names = []
        for t in self.tensor_types - _FLOAT_TENSORS:
            try:
                names.append(gguf.GGMLQuantizationType(t).name)
            except ValueError:
                names.append(f"type {t}")
        return sorted(names)

    @property
    def is_quantized(self) -> bool:
        """Whether llama.cpp would need ``allow_requantize``: a quantized tensor, or a file
        type other than F32/F16/BF16 (a tensor list is the truth; the key is a label)."""
        float_ftypes = {_ftype("F32"), _ftype("F16"), _ftype("BF16")}
        labelled = self.file_type is not None and self.file_type not in float_ftypes
        return bool(self.quantized_tensor_types) or labelled

    def describe(self) -> str:
        """``Q4_K_M``; ``quantized: Q4_K, Q6_K`` when the file type is not recorded."""
        if self.file_type is not None:
            return ftype_name(self.file_type)
        if self.quantized_tensor_types:
            return "quantized: " + ", ".join(self.quantized_tensor_types)
        return "unquantized"


_SCALARS: dict[int, str] = {
    gguf.GGUFValueType.UINT8: "B",
    gguf.GGUFValueType.INT8: "b",
    gguf.GGUFValueType.UINT16: "H",
    gguf.GGUFValueType.INT16: "h",
    gguf.GGUFValueType.UINT32: "I",
    gguf.GGUFValueType.INT32: "i",
    gguf.GGUFValueType.FLOAT32: "f",
    gguf.GGUFValueType.BOOL: "?",
    gguf.GGUFValueType.UINT64: "Q",
    gguf.GGUFValueType.INT64: "q",
    gguf.GGUFValueType.FLOAT64: "d",
}
"""struct formats of the GGUF scalar value types."""


class _Header:
    """A little-endian GGUF header read from a memory map: only what :func:`read_gguf` needs."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, fmt: str) -> int | float | bool:
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def count(self) -> int:
        return int(self.take("Q"))

    def string(self) -> str:
        n = self.count()
        end = self.pos + n
        if end > len(self.buf):
            raise struct.error("string past the end of the file")
        text = self.buf[self.pos : end].decode("utf-8", errors="replace")
        self.pos = end
        return text

    def value(self, vtype: int) -> object:
        """Read one value; arrays are skipped (returned as None)."""
        if vtype == gguf.GGUFValueType.STRING:
            return self.string()
        if vtype == gguf.GGUFValueType.ARRAY:
            etype, n = int(self.take("I")), self.count()
            if etype in _SCALARS:
                self.pos += n * struct.calcsize(_SCALARS[etype])
            else:
                for _ in range(n):
                    self.value(etype)
            return None
        if vtype not in _SCALARS:
            raise struct.error(f"unknown value type {vtype}")
        return self.take(_SCALARS[vtype])


def read_gguf(path: Path) -> GgufInfo:
    """The architecture, file type, projector keys and tensor types of a GGUF file.

    Raises :class:`QuantizeError` for a missing file, a file that is not GGUF, or a truncated one.
    """
    if not path.exists():
        raise QuantizeError(f"no such file: {path}")
    if not path.is_file():
        raise QuantizeError(f"not a file: {path}")
    try:
        with path.open("rb") as f:
            if os.fstat(f.fileno()).st_size < 24:
                raise QuantizeError(f"{path} is not a GGUF file (too short)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(path, buf)
    except OSError as exc:
        raise QuantizeError(f"cannot read {path}: {exc.strerror or exc}") from None
    except struct.error:
        raise QuantizeError(f"{path} is a truncated or corrupt GGUF file") from None


def _parse(path: Path, buf: mmap.mmap) -> GgufInfo:
    if buf[:4] != b"GGUF":
        raise QuantizeError(f"{path} is not a GGUF file (it starts with {bytes(buf[:4])!r})")
    h = _Header(buf)
    h.pos = 4
    version = int(h.take("I"))
    if version not in (2, 3):
        byte_swapped = version > 0xFFFF
        raise QuantizeError(
            f"{path} is a big-endian GGUF, which llama.cpp on this machine cannot read"
            if byte_swapped
            else f"{path} is GGUF version {version}; llama.cpp reads versions 2 and 3"
        )
    n_tensors, n_kv = h.count(), h.count()
    values: dict[str, object] = {}
    clip_keys = False
    for _ in range(n_kv):
        key = h.string()
        value = h.value(int(h.take("I")))
        clip_keys = clip_keys or key.startswith("clip.")
        if key in ("general.architecture", "general.file_type", "split.count"):
            values[key] = value
    tensor_types = set()
    for _ in range(n_tensors):
        h.string()
        n_dims = int(h.take("I"))
        h.pos += 8 * n_dims
        tensor_types.add(int(h.take("I")))
        h.take("Q")  # offset
    arch = values.get("general.architecture")
    ftype = values.get("general.file_type")
    split = values.get("split.count")
    return GgufInfo(
        architecture=arch if isinstance(arch, str) else None,
        file_type=int(ftype) if isinstance(ftype, int) else None,
        clip_keys=clip_keys,
        tensor_types=frozenset(tensor_types),
        split_count=int(split) if isinstance(split, int) and split > 0 else 1,
    )


def source_files(src: Path, info: GgufInfo) -> list[Path]:
    """The files llama.cpp reads for ``src``: itself, or all the parts of a split model."""
    stem = src.name[: -len(".gguf")] if src.name.lower().endswith(".gguf") else src.name
    match = _SPLIT.search(stem)
    if info.split_count <= 1 or match is None:
        return [src]
    base = stem[: match.start()]
    n = info.split_count
    parts = [src.with_name(f"{base}-{i:05d}-of-{n:05d}.gguf") for i in range(1, n + 1)]
    return [p for p in parts if p.exists()]


@dataclass(frozen=True)
class Plan:
    """A checked request: llama.cpp may run."""

    src: Path
    dst: Path
    qtype: QuantType
    info: GgufInfo
    requantize: bool
    """Whether ``allow_requantize`` is set: the source is already quantized."""


def requantize_message(src: Path, info: GgufInfo, qtype: QuantType) -> str:
    was = info.describe()
    return (
        f"{src} is already quantized ({was}): {qtype.name} made from it starts from {was}'s "
        f"rounded weights, so it is never better than {was} (only larger, for a bigger type) and "
        f"loses more than {qtype.name} made from the original would; quantize the F16/BF16/F32 "
        "original if you have it, or pass --allow-requantize to accept the loss"
    )


def plan(
    src: Path,
    qtype: QuantType,
    out: Path | None,
    *,
    force: bool = False,
    allow_requantize: bool = False,
) -> Plan:
    """Check a request before llama.cpp runs; raises :class:`QuantizeError` saying why not."""
    info = read_gguf(src)
    if info.is_projector:
        raise QuantizeError(
            f"{src} is a vision projector (mmproj), not a text model; the projector stays as "
            "it is: quantize the text model and pair the new model with the same mmproj"
        )
    if info.file_type == qtype.ftype:
        raise QuantizeError(f"{src} is already {qtype.name}: nothing to do")
    dst = out if out is not None else default_output(src, qtype)
    if dst.is_dir():
        dst = dst / default_output(src, qtype).name
    if not dst.parent.is_dir():
        raise QuantizeError(f"no such directory: {dst.parent}")
    if dst.resolve() == src.resolve() or (dst.exists() and dst.samefile(src)):
        raise QuantizeError(f"the output is the source ({src}): name another with --out")
    if dst.exists() and not force:
        raise QuantizeError(f"{dst} exists: pass --force to replace it, or name another with --out")
    if info.is_quantized and not allow_requantize:
        raise QuantizeError(requantize_message(src, info, qtype))
    return Plan(src, dst, qtype, info, requantize=info.is_quantized)


def _failure(lines: list[str], code: int) -> str:
    """llama.cpp's reason from its log: ``llama_model_quantize: failed to quantize: WHY``."""
    for line in reversed(lines):
        if "failed to quantize:" in line:
            return line.split("failed to quantize:", 1)[1].strip()
    for line in reversed(lines):
        if "error" in line.lower():
            return line.strip()
    return f"llama_model_quantize returned {code}"


def quantize(p: Plan, *, threads: int | None = None) -> float:
    """Run llama.cpp's quantize for a checked plan; the seconds it took.

    It writes a temporary file beside the output and renames it on success, so the output is
    either whole or absent, after a failure and after Ctrl-C alike (the work runs in a thread
    so that the main thread sees Ctrl-C at once, instead of after llama.cpp returns).
    llama.cpp's per-tensor log is kept from the terminal; its error line becomes the message.
    """
    import ctypes

    import llama_cpp
    import llama_cpp._logger as llama_logger

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = p.qtype.ftype
    params.nthread = threads or 0  # 0: every hardware thread
    params.allow_requantize = p.requantize

    log: deque[str] = deque(maxlen=200)

    @llama_cpp.llama_log_callback
    def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        log.append(text.decode("utf-8", errors="replace"))

    fd, tmp_name = tempfile.mkstemp(dir=p.dst.parent, prefix=f".{p.dst.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    codes: list[int] = []

    def work() -> None:
        codes.append(
            llama_cpp.llama_model_quantize(
                os.fsencode(p.src), os.fsencode(tmp), ctypes.byref(params)
            )
        )

    worker = threading.Thread(target=work, name="quantize", daemon=True)
    started = time.monotonic()
    _LIVE_CALLBACKS.append(capture)  # llama.cpp holds a pointer to it: never collected
    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
    try:
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.2)
        except KeyboardInterrupt:
            # llama.cpp cannot be stopped mid-quantize, and an interpreter shutting down
            # around its running thread crashes (SIGSEGV, measured): drop the temporary file
            # and leave at once, without the interpreter's teardown
            tmp.unlink(missing_ok=True)
            sys.stderr.write("\ninterrupted: nothing was written\n")
            sys.stderr.flush()
            os._exit(130)
        seconds = time.monotonic() - started
        code = codes[0] if codes else -1
        if code != 0:
            raise QuantizeError(
                f"llama.cpp could not quantize {p.src}: {_failure(list(log), code)}"
            )
        written = read_gguf(tmp)
        if written.file_type != p.qtype.ftype:
            raise QuantizeError(
                f"llama.cpp wrote a {written.describe()} file, not {p.qtype.name}; "
                f"nothing was written to {p.dst}"
            )
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp's 0600 would stay with the model
        tmp.replace(p.dst)
        return seconds
    finally:
        tmp.unlink(missing_ok=True)
        if not worker.is_alive():  # a Ctrl-C'd worker may still log into ``capture``
            llama_cpp.llama_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))
