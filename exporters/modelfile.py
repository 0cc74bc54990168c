"""Ollama Modelfile for an exported GGUF: FROM the file, TEMPLATE and stop tokens for chat formats we know."""

from __future__ import annotations

from pathlib import Path

# (marker in the HF/GGUF jinja chat template, Ollama Go template, stop strings)
_CHATML = ('{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
           '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n')
_LLAMA3 = ('{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}'
           '{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}'
           '<|start_header_id|>assistant<|end_header_id|>\n\n')
KNOWN_FORMATS = {
    "chatml": ("<|im_start|>", _CHATML, ("<|im_start|>", "<|im_end|>")),
    "llama3": ("<|start_header_id|>", _LLAMA3, ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
}


def chat_format(chat_template: str | None) -> str | None:
    """Name of the known chat format a jinja template uses, or None."""
    for name, (marker, _, _) in KNOWN_FORMATS.items():
        if chat_template and marker in chat_template:
            return name
    return None


def render(gguf_path: str | Path, chat_template: str | None, temperature: float | None = None) -> str:
    """Modelfile text with `FROM ./<file>` (relative, so the folder can move as a whole)."""
    lines = [f"FROM ./{Path(gguf_path).name}"]
    fmt = chat_format(chat_template)
    if fmt:
        _, template, stops = KNOWN_FORMATS[fmt]
        lines.append(f'TEMPLATE """{template}"""')
        lines += [f'PARAMETER stop "{s}"' for s in stops]
    else:
        lines.append("# chat template not recognised: Ollama falls back to the GGUF's own tokenizer.chat_template")
    if temperature is not None:
        lines.append(f"PARAMETER temperature {temperature}")
    return "\n".join(lines) + "\n"


def path_for(gguf_path: str | Path) -> Path:
    """Where the Modelfile goes: next to the GGUF, `<stem>.Modelfile` (use `ollama create NAME -f` it)."""
    p = Path(gguf_path)
    return p.with_name(f"{p.stem}.Modelfile")
