"""The options: one meaning per name across commands, and every value checked before any work.

Bad values from the command line, a YAML `--config` file or the Python API are one line and exit 2 (or a
`UserError`), never a traceback; a property test throws generated values and YAML files at the loader.
"""

import dataclasses
import string
import types

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from animatch import cli, config
from animatch.errors import UserError

CONFIGS = {name: cls for name, (cls, _, _) in cli.COMMANDS.items()}

# Names whose meaning is the command's own (the tests below check that they really differ).
PER_COMMAND = {
    "out": "what each command writes",
    "model": "CLIP or LLaVA, to start from or to use; required where there is no sensible default",
    "batch_size": "training pairs, embedding inputs or judge pairs",
    "epochs": "the CLIP and LLaVA recipes", "accum_steps": "the CLIP and LLaVA recipes",
    "lr": "the CLIP and LLaVA recipes", "weight_decay": "the CLIP and LLaVA recipes",
    "seed": "what the command draws at random",
    "metadata": "prepare/audit: the dataset's metadata file; match: a candidates file",
    "split_dir": "required input of training and evaluation; an optional switch of index and audit",
    "split": "the split to evaluate (default test), or an optional filter of index",
    "threshold": "a judge score (1-10) or audit's fit score (a z-score)",
    "k": "search results, or judge-eval's keyword Recall@K",
    "image": "search's query image, or judge's image to score",
    "index": "search's positional INDEX, serve's --index",
}


def _default_of(cls: type, name: str):
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _declarations() -> dict[str, dict[str, dataclasses.Field]]:
    """option name -> {command: its field}"""
    found: dict[str, dict[str, dataclasses.Field]] = {}
    for command, cls in CONFIGS.items():
        for f in dataclasses.fields(cls):
            found.setdefault(f.name, {})[command] = f
    return found


SHARED = sorted(name for name, where in _declarations().items() if len(where) > 1)


@pytest.mark.parametrize("name", SHARED)
def test_a_shared_option_name_means_one_thing(name):
    where = _declarations()[name]
    owners = {command: cli._group_of(CONFIGS[command], name) for command in where}
    described = {(repr(_default_of(CONFIGS[c], name)), *(str(v) for v in f.metadata.values()))
                 for c, f in where.items()}
    if name in PER_COMMAND:
        assert len(described) > 1, f"{name} is declared alike everywhere: move it into an option group"
    else:
        assert len(set(owners.values())) == 1, f"{name} is declared in {sorted(set(map(str, owners.values())))}"
        assert len(described) == 1


@pytest.mark.parametrize("name", ["threshold", "max_description_tokens", "max_analysis_tokens", "dtype",
                                  "load_in_4bit", "attn_implementation"])
def test_the_judge_options_of_audit_and_serve_match_the_judges(name):
    judge = next(f for f in dataclasses.fields(config.JudgeConfig) if f.name == name)
    for cls in (config.AuditConfig, config.ServeConfig, config.JudgeEvalConfig):
        prefixed = name if cls is config.JudgeEvalConfig else "judge_" + name
        f = next(f for f in dataclasses.fields(cls) if f.name == prefixed)
        meta = ("bounds", "choices")
        assert (f.default, *map(f.metadata.get, meta)) == (judge.default, *map(judge.metadata.get, meta))
        assert judge.metadata["help"] in f.metadata["help"]


def test_drifts_are_gone():
    assert config.JudgeEvalConfig.max_analysis_tokens == config.JudgeConfig.max_analysis_tokens == 200
    assert "device" in {f.name for f in dataclasses.fields(config.EvalConfig)}
    workers = {cls: _default_of(cls, "workers") for cls in CONFIGS.values()
               if "workers" in {f.name for f in dataclasses.fields(cls)}}
    assert len(workers) >= 7 and set(workers.values()) == {2}


def test_every_command_option_has_a_bound_or_choices_when_numeric():
    for command, cls in CONFIGS.items():
        for f in dataclasses.fields(cls):
            tp, _, _ = config.resolved_types(cls)[f.name]
            if tp in (int, float) and f.name not in ("threshold", "sentence_threshold"):
                assert f.metadata["bounds"], f"{command} --{f.name} has no range"


def test_python_api_checks_values_like_the_cli():
    with pytest.raises(UserError, match="--lr-schedule: 'wsdx' is not one of cosine, wsd"):
        config.TrainConfig(data="d", split_dir="s", out="o", lr_schedule="wsdx")
    with pytest.raises(UserError, match="--lock-image: expected true or false, got 'no'"):
        config.TrainConfig(data="d", split_dir="s", out="o", lock_image="no")
    with pytest.raises(UserError, match="--data is required"):
        config.TrainConfig(split_dir="s", out="o")
    with pytest.raises(UserError, match="--negative-score must be below --positive-score"):
        config.JudgeTrainConfig(data="d", split_dir="s", out="o", negative_score=9)
    cfg = config.TrainConfig(data="d", split_dir="s", out="o", lr=1)
    assert isinstance(cfg.lr, float)
    with pytest.raises(UserError, match="--batch-size must be at least 1, got 0"):
        dataclasses.replace(cfg, batch_size=0)


def _run(argv, capsys) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own refusals (not a number, unknown option)
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture
def no_jobs(monkeypatch):
    """Every command's job replaced by one that does nothing: only the options are exercised."""
    real = cli.importlib.import_module
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: types.SimpleNamespace(
        **{target.split(":")[1]: (lambda cfg: 0) for _, target, _ in cli.COMMANDS.values()})
        if name.startswith("animatch.") else real(name))


@pytest.mark.parametrize("command, args, message", [
    ("train", ["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    ("train", ["--accum-steps", "0"], "--accum-steps must be at least 1"),
    ("train", ["--lr", "-1"], "--lr must be above 0"),
    ("train", ["--lr", "nan"], "--lr: expected a finite number"),
    ("train", ["--workers", "-1"], "--workers must be at least 0"),
    ("train", ["--max-steps", "0"], "--max-steps must be at least 1"),
    ("train", ["--max-steps", "-3"], "--max-steps must be at least 1"),
    ("train", ["--decay-fraction", "1.5"], "--decay-fraction must be in (0, 1]"),
    ("match", ["--top-k", "0"], "--top-k must be at least 1"),
    ("match", ["--batch-size", "0"], "--batch-size must be at least 1"),
    ("match", ["--device", "gpu"], "--device: 'gpu' is not a torch device"),
    ("search", ["--k", "0"], "--k must be at least 1"),
    ("prepare", ["--val-fraction", "1"], "--val-fraction must be in [0, 1)"),
    ("serve", ["--port", "70000"], "--port must be in [0, 65535]"),
    ("judge", ["--top-p", "0"], "--top-p must be in (0, 1]"),
    ("judge", ["--retry-temperatures", "0.5", "-1"], "--retry-temperatures must be above 0"),
    ("judge-train", ["--lora-target-modules", "(("], "--lora-target-modules is not a valid regex"),
])
def test_bad_numbers_are_one_line_exit_2_before_any_work(command, args, message, tmp_path, capsys, no_jobs):
    required = {"train": ["--data", tmp_path, "--split-dir", tmp_path, "--out", tmp_path / "o"],
                "match": ["--images", tmp_path, "--model", "m", "--out", tmp_path / "o"],
                "search": [tmp_path, "query"], "prepare": ["--data", tmp_path, "--out", tmp_path / "o"],
                "serve": ["--index", tmp_path], "judge": [],
                "judge-train": ["--data", tmp_path, "--split-dir", tmp_path, "--out", tmp_path / "o"]}[command]
    code, err = _run([command, *map(str, required), *args], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert _run([command, *map(str, required)], capsys) == (0, "")


@pytest.mark.parametrize("text, message", [
    ("lock_image: 'no'\n", "--lock-image: expected true or false, got 'no'"),
    ("max_steps: '3'\n", "--max-steps: expected an integer, got '3'"),
    ("workers: [1, 2]\n", "--workers: expected an integer, got [1, 2]"),
    ("lr: true\n", "--lr: expected a number, got True"),
    ("mixed_precision: fp8\n", "--mixed-precision: 'fp8' is not one of auto, no, fp16, bf16"),
    ("epochs: null\n", "--epochs: expected an integer, got None"),
    ("{1: 2}\n", "unknown option(s) 1"),
    ("a: [\n", "is not valid YAML"),
])
def test_yaml_values_of_the_wrong_type_or_range_are_one_line_exit_2(text, message, tmp_path, capsys, no_jobs):
    (tmp_path / "c.yaml").write_text(text)
    code, err = _run(["train", "--data", str(tmp_path), "--split-dir", str(tmp_path), "--out", str(tmp_path / "o"),
                      "--config", str(tmp_path / "c.yaml")], capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_yaml_numbers_in_exponent_form_are_numbers(tmp_path, capsys, monkeypatch):
    # YAML 1.1 reads 1e-5 as a string; users write learning rates that way
    seen = {}
    monkeypatch.setattr("animatch.clip.train.run_train", lambda cfg: seen.setdefault("cfg", cfg) and 0)
    (tmp_path / "c.yaml").write_text("lr: 1e-5\nadam_eps: 1.0E-8\nmax_steps: 3\nmodel: 1e5x\n")
    assert _run(["train", "--data", str(tmp_path), "--split-dir", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--config", str(tmp_path / "c.yaml")], capsys) == (0, "")
    cfg = seen["cfg"]
    assert (cfg.lr, cfg.adam_eps, cfg.max_steps, cfg.model) == (1e-5, 1e-8, 3, "1e5x")


def test_yaml_port_string_and_non_utf8_file_are_one_line(tmp_path, capsys, no_jobs):
    (tmp_path / "c.yaml").write_text("port: '17862'\n")
    assert _run(["serve", "--index", str(tmp_path), "--config", str(tmp_path / "c.yaml")], capsys)[0] == 2
    (tmp_path / "c.yaml").write_bytes(b"port: 1\n# \xff\xfe\n")
    code, err = _run(["serve", "--index", str(tmp_path), "--config", str(tmp_path / "c.yaml")], capsys)
    assert code == 2 and "is not UTF-8 text" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------ property test
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.integers(-3, 3) | st.floats(-2, 2), max_size=3))
ARG_TEXT = st.one_of(st.text(string.printable, max_size=8), st.integers(-5, 10).map(str),
                     st.floats(-2, 2).map(str), st.sampled_from(["nan", "inf", "-0", "1e400", "cuda:1", "fp16"]))


@st.composite
def invocations(draw):
    """(command, argv options, YAML text or None) with some options generated at random."""
    command = draw(st.sampled_from(sorted(CONFIGS)))
    fields = [f for f in dataclasses.fields(CONFIGS[command]) if not f.metadata["positional"]]
    chosen = draw(st.lists(st.sampled_from(fields), max_size=3, unique_by=lambda f: f.name)) if fields else []
    argv = []
    for f in chosen:
        argv += [config.flag(f), *draw(st.lists(ARG_TEXT, min_size=1, max_size=2))]
    yaml_fields = draw(st.lists(st.sampled_from(fields), max_size=3, unique_by=lambda f: f.name)) if fields else []
    document = {f.name: draw(VALUES) for f in yaml_fields}
    raw = draw(st.one_of(st.just(None), st.just(yaml.safe_dump(document)), st.text(max_size=30),
                         st.binary(max_size=20)))
    return command, argv, raw


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(invocations())
def test_generated_options_and_config_files_exit_0_or_2_never_a_traceback(tmp_path, capsys, no_jobs, case):
    command, argv, raw = case
    required = []
    for f in dataclasses.fields(CONFIGS[command]):
        if f.metadata["required"]:
            value = str(tmp_path) if f.metadata["exists"] or f.name != "preset" else "clip-tiny"
            required += [value] if f.metadata["positional"] else [config.flag(f), value]
    if raw is not None:
        path = tmp_path / "c.yaml"
        path.write_bytes(raw) if isinstance(raw, bytes) else path.write_text(raw, encoding="utf-8")
        argv += ["--config", str(path)]
    code, err = _run([command, *required, *argv], capsys)
    assert code in (0, 2)
    assert code == 0 or err.count("\n") == 1, err
