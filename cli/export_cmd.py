"""`adaprune-edge export`: a (pruned) model → GGUF (llama or deci), quantized, with JSON and an Ollama Modelfile."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adaprune_edge import models
from adaprune_edge.bitalloc import recipe_file
from adaprune_edge.cli.common import budget_options, cli_errors, console, err_console, fail, human_bytes
from adaprune_edge.device import Device
from adaprune_edge.gguf.header import read_header
from adaprune_edge.exporters import gguf, hf, modelfile, quantize, vocab
from adaprune_edge.quant import QuantRecipe
from adaprune_edge.runs import check_writable, write_json, write_text


def outputs_for(out: Path) -> tuple[Path, Path]:
    """(JSON report, Modelfile) paths written next to the GGUF."""
    return out.with_suffix(".export.json"), modelfile.path_for(out)


def _plan_table(plan: gguf.ExportPlan, quant: QuantRecipe) -> Table:
    types = {t.name: t for t in plan.structure.tensors(quant)}
    table = Table(title=f"tensor plan: arch {plan.arch}, {len(plan.tensors)} tensors, written as F16/F32 then {quant}")
    for col in ("tensor", "shape", "written", "bytes", quant.name):
        table.add_column(col, justify="right" if col == "bytes" else "left")
    for name, shape, qtype, n in gguf.iter_plan_rows(plan):
        t = types.get(name)
        final = "" if t is None else t.qtype.name + (" (fall-back)" if t.fallback else "")
        table.add_row(name, shape, qtype, f"{n:,}", final)
    return table


def _summary(res: gguf.ExportResult, rep: quantize.QuantReport, plan: gguf.ExportPlan, extra: list[tuple[str, str]]) -> Table:
    table = Table(title=f"exported {res.path}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows = [("architecture", res.arch), ("structure", plan.structure.condensed()), ("quant", rep.quant.name),
            ("file size", f"{human_bytes(res.file_bytes)} ({res.file_bytes:,} B)"),
            ("bits/weight", f"{rep.bits_per_weight:.2f}"), ("parameters", f"{rep.params:,}"),
            ("fall-backs", _fallback_text(rep)),
            ("bias tensors", ", ".join(res.biases) or "none")]
    if rep.mismatches:
        rows.append(("type mismatches", f"{len(rep.mismatches)} tensors differ from the predicted type (see JSON)"))
    for k, v in rows + extra:
        table.add_row(k, v)
    return table


def _fallback_text(rep: quantize.QuantReport) -> str:
    if not rep.fallbacks:
        return "none"
    kinds: dict[str, int] = {}
    for t in rep.fallbacks:
        kinds[t.actual] = kinds.get(t.actual, 0) + 1
    return f"{len(rep.fallbacks)} tensors (" + ", ".join(f"{n}→{k}" for k, n in kinds.items()) + ") — row size not a multiple of the block"


@cli_errors
@budget_options
def export_cmd(
    model: str = typer.Option("default", "--model", "-m", help="'default', a pruned folder (structure.json), an HF folder, a .gguf, or a hub id."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .gguf path; <stem>.export.json and <stem>.Modelfile are written next to it."),
    quant: str = typer.Option("Q4_K_M", "--quant", "-q", help=f"A recipe FTYPE[:fb=TYPE][:out=TYPE] with FTYPE one of {', '.join(quantize.KNOWN)} (F16/F32 are not quantized); fb= is the type of rows that do not fit the 256-block, out= the output projection's. 'auto': one type per tensor, chosen for --device under its budget (least predicted KL to the model; writes <stem>.quant.json)."),
    quant_file: Optional[Path] = typer.Option(None, "--quant-file", help="A per-tensor allocation (<stem>.quant.json written by `export --quant auto` or `build`): write exactly those types."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Device profile for --quant auto (its limits; the budget options override them)."),
    calibration: str = typer.Option("builtin:self", "--calibration", help="Calibration text for --quant auto's importance matrix and sensitivity probes (as build's --calibration)."),
    imatrix: Optional[Path] = typer.Option(None, "--imatrix", help="Importance matrix (llama.cpp GGUF format, e.g. a build's imatrix.gguf or `llama-imatrix` output) for the quantizer."),
    name: Optional[str] = typer.Option(None, "--name", help="general.name in the GGUF (default: the file stem)."),
    hf_out: Optional[Path] = typer.Option(None, "--hf-out", help="Also save an HF folder here: standard layout for uniform structures, else safetensors + structure.json (loadable only by adaprune-edge)."),
    tokenizer_from: Optional[Path] = typer.Option(None, "--tokenizer-from", help="Copy tokenizer/chat-template metadata from this GGUF (default: the source GGUF if the model is one, else built from the HF tokenizer with llama.cpp's 'default' pre-tokenizer; `validate` reports whether tokenization agrees)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Quantizer threads (default: all cores)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the tensor plan (names, shapes, types, bytes) and write nothing."),
    limits: Any = None,
) -> None:
    """Export a model to GGUF for llama.cpp / Ollama: uniform → arch llama, per-layer shapes → arch deci."""
    auto = quant == "auto"
    if auto and not device:
        fail("--quant auto allocates a type per tensor for a device: add --device NAME (see `adaprune-edge devices`)")
    dev = Device.resolve(device, budget=limits) if auto else None
    r = recipe_file.load(quant_file) if quant_file else (None if auto else QuantRecipe.parse(quant))
    im = None
    if imatrix is not None:
        from adaprune_edge.exporters.imatrix import Imatrix

        im = Imatrix.load(imatrix)
        r = r.with_imatrix() if r is not None else None
    if out.suffix != ".gguf":
        fail(f"--out must end in .gguf, got {out}")
    json_path, mf_path = outputs_for(out)
    if not dry_run:
        for p in (out, json_path, mf_path) + ((hf_out,) if hf_out else ()) + ((recipe_file.path_for(out),) if auto else ()):
            check_writable(p, force)
    with console.status(f"loading {model} ..."):
        lm = models.load(model)
    if auto:
        if dry_run:
            fail("--quant auto with --dry-run: the allocation needs the sensitivity measurement (~2 min); run without --dry-run")
        r, im = _allocate(lm, dev, limits.decode_ms, im, calibration, out, threads)
    plan = gguf.plan_for_model(lm.model, r.ftype if r.is_float else "F16")
    if r.assign:
        recipe_file.check_matches(r, plan.structure)
        if r.imatrix and im is None:
            fail(f"{quant_file} was allocated with an importance matrix: add --imatrix (the build's imatrix.gguf)")
    if dry_run:
        console.print(_plan_table(plan, r))
        console.print(f"would write {out} (~{human_bytes(plan.structure.gguf_bytes(r))} of tensor data), "
                      f"{json_path.name}, {mf_path.name}")
        return
    meta = vocab.from_gguf(tokenizer_from) if tokenizer_from else vocab.for_model(lm, plan.structure.vocab)
    if im is not None:
        im.check(plan.structure)  # before anything is written
    res = _write(lm, out, meta, r, name or out.stem, threads, im)
    rep = quantize.report(out, plan.structure, r)
    write_text(mf_path, modelfile.render(out, meta.chat_template))
    extra = [("tokenizer", meta.source), ("Modelfile", str(mf_path)), ("JSON", str(json_path))]
    hf_res = None
    if hf_out:
        with console.status(f"saving HF folder {hf_out} ..."):
            hf_res = hf.save(lm.model, lm.tokenizer, hf_out, force=force)
        extra.append(("HF folder", f"{hf_res.path} ({hf_res.layout} layout)"))
    write_json(json_path, {"export": res.to_dict(), "quant": rep.to_dict(), "plan": {
        "arch": plan.arch, "data_bytes_f16": plan.data_bytes, "structure": plan.structure.to_dict(),
        "hparams": plan.hparams.to_dict()}, "source": lm.spec.to_dict(), "tokenizer": meta.to_dict(),
        "modelfile": str(mf_path), "hf": hf_res.to_dict() if hf_res else None})
    console.print(_summary(res, rep, plan, extra))


def _allocate(lm: models.LoadedModel, dev: Device, budget_ms: Optional[float], im, calibration: str, out: Path,
              threads: Optional[int]):
    """(allocated recipe, importance matrix) for `dev`: F16 written to a temp file, imatrix (unless given) and
    sensitivity from the calibration text, solver.fit; the recipe file goes next to `out`."""
    from adaprune_edge.archs.structure import Structure
    from adaprune_edge.bitalloc import sensitivity, solver
    from adaprune_edge.data.calibration import CalibrationPool
    from adaprune_edge.exporters import imatrix as imx

    st = Structure.from_model(lm.model)
    with console.status(f"reading calibration text {calibration} ..."):
        pool = CalibrationPool.from_sources([calibration], lm.tokenizer, 256, (0.0, 0.8), loaded=lm)
    im = im or imx.collect(lm.model, pool.windows[:16], (calibration,))
    work = models.cache_dir() / "sensitivity"  # the measurement is cached per model, imatrix and windows
    work.mkdir(parents=True, exist_ok=True)
    f16 = out.with_name(f".{out.stem}.f16-{os.getpid()}.gguf")
    try:
        with console.status("measuring per-tensor sensitivity (llama.cpp quantizes every type once) ...") as status:
            gguf.write_model(lm.model, f16, vocab.for_model(lm, st.vocab))
            sens = sensitivity.compute(lm.model, f16, im, pool.windows[16:18], work, read_header(f16)[0]["general.architecture"],
                                       threads, progress=lambda s: status.update(f"sensitivity: {s}"))
    finally:
        f16.unlink(missing_ok=True)
    alloc = solver.fit(st, sens, dev, budget_ms, imatrix=True)
    recipe_file.save(recipe_file.path_for(out), alloc.recipe, device=dev.name, budget_ms=budget_ms,
                     sensitivity=sens.key, predicted=alloc.to_dict())
    console.print(f"allocated {alloc.recipe}: predicted KL {alloc.damage:.4f}, {human_bytes(alloc.file_bytes)}, "
                  f"{alloc.binding.describe()}", highlight=False)
    return alloc.recipe, im


def _write(lm: models.LoadedModel, out: Path, meta: vocab.TokenizerMeta, quant: QuantRecipe, name: str,
           threads: Optional[int], imatrix=None) -> gguf.ExportResult:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[tensor]}"))
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("writing tensors", total=None, tensor="")

        def progress(tensor: str, i: int, n: int) -> None:
            bar.update(task, total=n, completed=i, tensor=tensor)
            if i == n and not quant.is_float:
                bar.update(task, description=f"quantizing to {quant}", tensor="(llama.cpp)")

        return gguf.write_model(lm.model, out, meta, quant=quant, name=name, source_model=lm.spec.spec,
                                progress=progress, threads=threads, imatrix=imatrix)
