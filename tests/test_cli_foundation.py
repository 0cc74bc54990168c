from typer.testing import CliRunner

from adaprune_edge.cli.app import app

runner = CliRunner()


def test_version_and_help():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and "adaprune-edge 0.1.0" in r.output
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "devices" in r.output and "inspect" in r.output


def test_devices_list_shows_every_profile():
    r = runner.invoke(app, ["devices", "list"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for name in ("raspberry-pi-5", "raspberry-pi-4", "jetson-orin-nano", "pixel-8", "galaxy-s23",
                 "iphone-15-pro", "macbook-air-m2", "x86-laptop", "this-host"):
        assert name in r.output


def test_devices_show_resolves_inheritance():
    r = runner.invoke(app, ["devices", "show", "raspberry-pi-4", "--json"])
    assert r.exit_code == 0 and '"threads": 4' in r.output and '"ram_gb": 4' in r.output


def test_unknown_device_is_one_line_exit_2():
    r = runner.invoke(app, ["devices", "show", "raspbery-pi-5"])
    assert r.exit_code == 2
    assert "did you mean 'raspberry-pi-5'" in r.output and "Traceback" not in r.output


def test_validate_typo_file(tmp_path):
    f = tmp_path / "dev.yaml"
    f.write_text("extends: raspberry-pi-5\nthreds: 4\n")
    r = runner.invoke(app, ["devices", "validate", str(f)], env={"COLUMNS": "300"})
    assert r.exit_code == 2 and "line 2" in r.output and "threds" in r.output


def test_inspect_unknown_model_path(tmp_path):
    r = runner.invoke(app, ["inspect", "--model", str(tmp_path / "nope.gguf")])
    assert r.exit_code == 2 and "not found" in r.output and "Traceback" not in r.output


def test_inspect_tiny_hf_folder(tiny_llama, tmp_path):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    m = tiny_llama()
    m.save_pretrained(tmp_path)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(256)} | {"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(tmp_path)
    r = runner.invoke(app, ["inspect", "--model", str(tmp_path)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "4 / 2" in r.output and "0-2: 4h/2kv/128ff" in r.output


def test_tables_keep_their_columns_when_printed_to_a_file():
    """install.sh logs the main job to a file: off a terminal, rich would fold every long cell into one-word
    lines at 80 columns; each profile's row (name and whole budget) stays on one line."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run([sys.executable, "-m", "adaprune_edge.cli.app", "devices", "list"], capture_output=True,
                         text=True, env=env, check=True).stdout
    row = next(line for line in out.splitlines() if "raspberry-pi-5 " in line)
    assert "tok/s decode" in row and "first token" in row and "after" in row, row
    assert len(out.splitlines()) < 40, "rows were folded"
