"""Names of the GGUF metadata keys adaprune-edge adds (the standard ones come from `gguf.Keys`).

One place for our key names, as gguf-py keeps its own in `gguf.constants.Keys`."""

from __future__ import annotations

PREFIX = "adaprune"

PRUNED = f"{PREFIX}.pruned"                # bool: the weights were structurally pruned
VERSION = f"{PREFIX}.version"              # str: adaprune-edge version that wrote the file
STRUCTURE = f"{PREFIX}.structure"          # str: Structure.to_dict() as JSON
RECIPE = f"{PREFIX}.recipe"                # str: the PruneConfig / recipe that produced it, as JSON
SOURCE_MODEL = f"{PREFIX}.source_model"    # str: the model spec the export started from
SHAPE_ONLY = f"{PREFIX}.shape_only"        # bool: random weights of the right shapes (latency probes)
BIAS_TENSORS = f"{PREFIX}.bias_tensors"    # str: JSON list of bias-compensation tensor names carried

# standard general.* keys we fill ourselves (kept here so tests and readers share the spelling)
GENERAL_NAME = "general.name"
GENERAL_DESCRIPTION = "general.description"
GENERAL_ARCHITECTURE = "general.architecture"
TOKENIZER_PREFIX = "tokenizer."
CHAT_TEMPLATE = "tokenizer.chat_template"

ALL_OURS = (PRUNED, VERSION, STRUCTURE, RECIPE, SOURCE_MODEL, SHAPE_ONLY, BIAS_TENSORS)
