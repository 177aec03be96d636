"""The workload a recommendation is for: head dims, training mode, packing, sequence length, and
an Axolotl config's attention keys. Read from flags, a Hugging Face config.json, or an Axolotl
YAML file (PyYAML's safe loader, with limits: these files come from anywhere)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from attn_doctor.inputs import MIB, InputError, read_json, read_text

MAX_FILE_BYTES = 1 * MIB  # a config is kilobytes; a larger file is not one
MAX_ALIASES = 100  # YAML anchors: enough for real configs, none for an alias bomb
# Axolotl configs nest 3 or 4 deep (datasets, then a dataset's fields). PyYAML's composer and
# constructor recurse once per level, and its scanner slows with every open flow level.
MAX_YAML_DEPTH = 32

# Axolotl's legacy attention flags, highest priority first (enums.py LEGACY_ATTN_FLAG_TO_IMPL, v0.18.0)
LEGACY_FLAGS = (
    ("xformers_attention", "xformers"),
    ("sage_attention", "sage"),
    ("flex_attention", "flex_attention"),
    ("flash_attention", "flash_attention_2"),
    ("sdp_attention", "sdpa"),
    ("eager_attention", "eager"),
)
# Axolotl's CANONICAL_ATTN_IMPLS (v0.18.0); a value with "/" is a hub kernel
CANONICAL = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention", "xformers", "sage", "fp8")


class WorkloadError(ValueError):
    """A workload file or flag that cannot be used (exit 2)."""


@dataclass(frozen=True)
class AxolotlAttention:
    """The attention keys of an Axolotl config."""

    attn_implementation: str | None = None
    legacy: tuple[str, ...] = ()  # legacy flags set to true, highest priority first
    s2_attention: bool = False
    torch_compile: bool | str | None = None
    adapter: str | None = None

    @property
    def effective(self) -> str | None:
        """What Axolotl will load: the single key, else the highest-priority legacy flag."""
        if self.attn_implementation:
            return self.attn_implementation
        return dict(LEGACY_FLAGS)[self.legacy[0]] if self.legacy else None


@dataclass(frozen=True)
class Workload:
    head_dim: int | None = None
    head_dim_v: int | None = None
    training: str | None = None  # "full" | "lora" | "inference"
    sample_packing: bool | None = None
    seq_len: int | None = None
    axolotl: AxolotlAttention | None = None
    base_model: str | None = None


def parse_head_dim(text: str) -> tuple[int, int]:
    """`128` or `192,128` (query/key, value)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError as error:
        raise WorkloadError(f"--head-dim {text!r}: give N or Q,V (numbers)") from error
    if len(values) not in (1, 2) or any(v <= 0 or v > 4096 for v in values):
        raise WorkloadError(f"--head-dim {text!r}: give N or Q,V, each between 1 and 4096")
    return values[0], values[-1]


def _config_path(path: Path) -> Path:
    """A model folder stands for its config.json."""
    return path / "config.json" if path.is_dir() else path


def model_head_dims(path: Path) -> tuple[int, int]:
    """The largest head dims any attention layer has, from a Hugging Face config.json (or its
    folder), as transformers builds the layers: the text model of a composite one (text_config,
    decoder, generator: PreTrainedConfig.get_text_config), MLA's qk_nope + qk_rope with v_head_dim
    (its head_dim is the rope part alone), Gemma 4's global_head_dim on its full-attention layers
    beside head_dim on the sliding ones, else head_dim, else hidden_size // num_attention_heads.
    (transformers v5.25.0: configuration_utils.py get_text_config; models/deepseek_v3/
    configuration_deepseek_v3.py; models/gemma4/modeling_gemma4.py)"""
    try:
        config = read_json(_config_path(path), "--model", MAX_FILE_BYTES)
    except InputError as error:
        raise WorkloadError(str(error)) from error
    if not isinstance(config, dict):
        raise WorkloadError(f"--model {path}: a config.json holds an object")
    text = next((config[k] for k in ("text_config", "decoder", "generator") if isinstance(config.get(k), dict)), None)
    config = text if isinstance(text, dict) else config

    def number(key: str) -> int | None:
        value = config.get(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise WorkloadError(f"--model {path}: {key} must be a positive integer, not {value!r}")
        return value

    nope, rope, v_dim = number("qk_nope_head_dim"), number("qk_rope_head_dim"), number("v_head_dim")
    if nope and rope:
        return nope + rope, v_dim or nope + rope
    head_dim, full_layers = number("head_dim"), number("global_head_dim")
    if full_layers and full_layers > (head_dim or 0):
        return full_layers, full_layers
    if head_dim:
        return head_dim, v_dim or head_dim
    hidden, heads = number("hidden_size"), number("num_attention_heads")
    if hidden and heads:
        return hidden // heads, hidden // heads
    raise WorkloadError(f"--model {path}: no head_dim, and no hidden_size with num_attention_heads")


def _safe_yaml(text: str, path: Path) -> Any:
    import yaml

    try:
        problem = _past_limits(yaml.parse(text, Loader=yaml.SafeLoader))
        config = None if problem else yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise WorkloadError(f"--config {path} is not valid YAML{line}") from error
    except Exception as error:
        # PyYAML's constructors raise whatever converting a value hits: ValueError for 2024-13-45
        # or 5,000 digits, AttributeError for `!!timestamp x`
        reason = f"{type(error).__name__}: {str(error).split(';')[0][:120]}"
        raise WorkloadError(f"--config {path}: a value PyYAML cannot read ({reason})") from error
    if problem:
        raise WorkloadError(f"--config {path}: {problem}; refusing")
    return config


def _past_limits(events: Iterator[Any]) -> str | None:
    """What goes past the limits, found on the parser's events (a flat stream: nothing recursed,
    nothing built) before safe_load builds anything. An alias bomb expands each alias again;
    a nesting bomb recurses once per level, and the first event past the limit ends the walk."""
    import yaml

    aliases = depth = 0
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                return f"over {MAX_ALIASES} YAML aliases"
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                return f"nests over {MAX_YAML_DEPTH} levels deep"
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


def axolotl_workload(path: Path) -> Workload:
    """The attention-relevant keys of an Axolotl config; other keys are left alone."""
    try:
        text = read_text(path, "--config", MAX_FILE_BYTES)
    except InputError as error:
        raise WorkloadError(str(error)) from error
    config = _safe_yaml(text, path)
    if not isinstance(config, dict):
        raise WorkloadError(f"--config {path}: an Axolotl config is a mapping of keys")

    def typed(key: str, kinds: tuple[type, ...], label: str) -> Any:
        value = config.get(key)
        if value is not None and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
            raise WorkloadError(f"--config {path}: {key} must be {label}, not {value!r}")
        return value

    legacy = tuple(key for key, _ in LEGACY_FLAGS if typed(key, (bool,), "true or false"))
    adapter = typed("adapter", (str,), "a string")
    sequence_len = typed("sequence_len", (int,), "an integer")
    return Workload(
        training="lora" if adapter else "full",
        sample_packing=typed("sample_packing", (bool,), "true or false"),
        seq_len=sequence_len,
        base_model=typed("base_model", (str,), "a string"),
        axolotl=AxolotlAttention(
            attn_implementation=typed("attn_implementation", (str,), "a string"),
            legacy=legacy,
            s2_attention=bool(typed("s2_attention", (bool,), "true or false")),
            torch_compile=typed("torch_compile", (bool, str), 'true, false or "auto"'),
            adapter=adapter,
        ),
    )


def combine(base: Workload, **flags: Any) -> Workload:
    """Flags given on the command line win over what a config file said."""
    return replace(base, **{k: v for k, v in flags.items() if v is not None})
