"""The TOML config of ``hpcqnn train``: defaults, parsing, round trips, overrides and every error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcqnn.errors import HpcqnnError
from hpcqnn.run.config import (
    Config,
    ConfigError,
    DataConfig,
    EvaluationConfig,
    ExecutionConfig,
    ModelConfig,
    RunConfig,
    TrainingConfig,
    config_dict,
    dump_config,
    load_config,
    parse_config,
)

FULL = """
[run]
name = "cut-study"
seed = 7

[data]
dataset = "digits"
classes = [3, 8]
features = 6
test_fraction = 0.25
path = ""
max_train = 200

[model]
layers = 4
cuts = 2
rotations = "ry"
pieces = 3

[execution]
cutting = false
mode = "sampled"
shots = 4096
shot_allocation = "uniform"
device = "CPU"
schedule = "dynamic"
threads = 2
root_computes = false
straggler_ranks = [1, 3]
straggler_probability = 0.5
straggler_delay = 0.01
straggler_slowdown = 2.5

[training]
optimizer = "spsa"
epochs = 3
batch_size = 8
learning_rate = 0.1
spsa_perturbation = 0.2

[evaluation]
gaussian_sigmas = [0.0, 0.5]
gaussian_draws = 2
fgsm_epsilons = [0.1]
"""

FULL_CONFIG = Config(
    run=RunConfig(name="cut-study", seed=7),
    data=DataConfig(dataset="digits", classes=(3, 8), features=6, test_fraction=0.25, path="", max_train=200),
    model=ModelConfig(layers=4, cuts=2, rotations="ry", pieces=3),
    execution=ExecutionConfig(
        cutting=False,
        mode="sampled",
        shots=4096,
        shot_allocation="uniform",
        device="CPU",
        schedule="dynamic",
        threads=2,
        root_computes=False,
        straggler_ranks=(1, 3),
        straggler_probability=0.5,
        straggler_delay=0.01,
        straggler_slowdown=2.5,
    ),
    training=TrainingConfig(optimizer="spsa", epochs=3, batch_size=8, learning_rate=0.1, spsa_perturbation=0.2),
    evaluation=EvaluationConfig(gaussian_sigmas=(0.0, 0.5), gaussian_draws=2, fgsm_epsilons=(0.1,)),
)


def test_defaults() -> None:
    config = load_config()
    assert config == Config() == parse_config("")
    assert config.run == RunConfig(name="run", seed=1234)
    assert config.data == DataConfig("iris", (1, 2), 4, 0.2, "", 0)
    assert config.model == ModelConfig(3, 0, "ryrz", 2)
    assert config.execution == ExecutionConfig(
        True, "exact", 1000, "proportional", "auto", "static", 0, True, (), 0.0, 0.0, 1.0
    )
    assert config.training == TrainingConfig("adam", 10, 16, 0.05, 0.1)
    assert config.evaluation == EvaluationConfig((0.05, 0.1, 0.2, 0.3), 5, (0.05, 0.1, 0.2))


def test_full_file_parses(tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text(FULL, encoding="utf-8")
    assert load_config(path) == FULL_CONFIG
    assert load_config(str(path)) == FULL_CONFIG


def test_missing_keys_and_sections_take_defaults() -> None:
    config = parse_config("[model]\nlayers = 5\n")
    assert config.model == ModelConfig(layers=5)
    assert config.data == DataConfig() and config.training == TrainingConfig()


def test_dotted_keys_are_accepted() -> None:
    assert parse_config("model.layers = 2\nmodel.cuts = 2\n").model == ModelConfig(layers=2, cuts=2)


@pytest.mark.parametrize("config", [Config(), FULL_CONFIG], ids=["defaults", "full"])
def test_dump_parse_round_trip(config: Config) -> None:
    text = dump_config(config)
    assert parse_config(text) == config
    assert dump_config(parse_config(text)) == text


def test_round_trip_of_awkward_strings() -> None:
    path = 'quote " backslash \\ tab \t newline \n bell \x07 del \x7f unicode é ✓ C:\\data\\mnist'
    config = Config(run=RunConfig(name='quote " unicode é ✓'), data=DataConfig(dataset="mnist", path=path))
    assert parse_config(dump_config(config)) == config


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".", "", "back\\slash", "new\nline"])
def test_run_names_must_be_plain(name: str) -> None:
    """run.name names the directory runs/<name>-<time>: nothing that leads outside runs/."""
    with pytest.raises(ConfigError, match=r"run\.name must be a plain name \(not empty, no / or"):
        parse_config(f"[run]\nname = {json.dumps(name)}\n")


@pytest.mark.parametrize("text", ["", "[model]\nlayers = 2\n"])
def test_a_config_file_must_name_its_job(text: str, tmp_path: Path) -> None:
    """An empty or partial file used to train a default job named run."""
    path = tmp_path / "job.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}: the config sets no run\.name: a job must say what it is"):
        load_config(path)
    assert load_config(path, ["run.name=named"]).run.name == "named"


def test_config_dict_is_plain_json() -> None:
    plain = config_dict(FULL_CONFIG)
    assert plain["execution"]["straggler_ranks"] == [1, 3]
    assert plain["evaluation"]["gaussian_sigmas"] == [0.0, 0.5]
    assert plain["model"] == {
        "layers": 4, "cuts": 2, "rotations": "ry", "pieces": 3, "feature_map": "ry", "ansatz": "ladder",
        "entangler": "cx", "readout": "parity", "readout_terms": [], "readout_weights": [], "init": "uniform",
        "builder": "",
    }
    assert json.loads(json.dumps(plain)) == plain
    assert list(plain) == ["run", "data", "model", "execution", "execution.noise", "training", "evaluation"]


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, HpcqnnError) and issubclass(ConfigError, ValueError)


def test_int_accepted_for_float() -> None:
    config = parse_config("[training]\nlearning_rate = 1\n[evaluation]\ngaussian_sigmas = [0, 1]\n")
    assert config.training.learning_rate == 1.0 and type(config.training.learning_rate) is float
    assert config.evaluation.gaussian_sigmas == (0.0, 1.0)
    assert all(type(s) is float for s in config.evaluation.gaussian_sigmas)


# --- errors from the file ---------------------------------------------------------------------


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[model]\nlayers = = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML: .*line 2"):
        load_config(path)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing\.toml"):
        load_config(tmp_path / "missing.toml")


def test_unknown_section_lists_the_sections() -> None:
    with pytest.raises(ConfigError, match=r"unknown section \[modle\]; valid sections: run, data, model"):
        parse_config("[modle]\nlayers = 2\n")


def test_unknown_key_lists_the_valid_keys() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key model\.depth; valid keys of \[model\]: layers, cuts, rotations"
    ):
        parse_config("[model]\ndepth = 2\n", source="train.toml")


def test_section_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=r"\[model\] must be a table, got integer 3"):
        parse_config("model = 3\n")


WRONG_TYPES = [
    ('[model]\nlayers = "three"', r"model\.layers must be an integer, got string \"three\""),
    ("[model]\nlayers = 2.5", r"model\.layers must be an integer, got float 2\.5"),
    ("[model]\nlayers = true", r"model\.layers must be an integer, got boolean true"),
    ("[training]\nlearning_rate = true", r"training\.learning_rate must be a float, got boolean true"),
    ('[training]\nlearning_rate = "0.1"', r"training\.learning_rate must be a float, got string"),
    ("[training]\nlearning_rate = inf", r"training\.learning_rate must be a finite float, got inf"),
    ("[execution]\nroot_computes = 1", r"execution\.root_computes must be a boolean, got integer 1"),
    ('[execution]\nroot_computes = "yes"', r"execution\.root_computes must be a boolean, got string"),
    ("[run]\nname = 5", r"run\.name must be a string, got integer 5"),
    ("[data]\nclasses = 1", r"data\.classes must be an array of integers, got integer 1"),
    ('[data]\nclasses = [1, "2"]', r"data\.classes\[1\] must be an integer, got string \"2\""),
    ("[data]\nclasses = [1, true]", r"data\.classes\[1\] must be an integer, got boolean true"),
    ("[evaluation]\nfgsm_epsilons = 0.1", r"evaluation\.fgsm_epsilons must be an array of floats, got float"),
    ("[execution]\nstraggler_ranks = [[1]]", r"execution\.straggler_ranks\[0\] must be an integer, got array"),
]


OUT_OF_RANGE = [
    ("[run]\nseed = -1", r"run\.seed must be >= 0, got -1"),
    ('[data]\ndataset = "cifar"', r'data\.dataset must be one of "iris", "digits", "mnist"; got "cifar"'),
    ("[data]\nclasses = [1]", r"data\.classes must have exactly 2 items, got 1"),
    ("[data]\nclasses = [1, 2, 3]", r"data\.classes must have exactly 2 items, got 3"),
    ("[data]\nclasses = [2, 2]", r"data\.classes must hold distinct values, got \[2, 2\]"),
    ("[data]\nclasses = [-1, 2]", r"data\.classes\[0\] must be >= 0, got -1"),
    ("[data]\nfeatures = 1", r"data\.features must be >= 2, got 1"),
    ("[data]\ntest_fraction = 0", r"data\.test_fraction must be > 0 and < 1, got 0\.0"),
    ("[data]\ntest_fraction = 1.0", r"data\.test_fraction must be > 0 and < 1, got 1\.0"),
    ("[data]\nmax_train = -5", r"data\.max_train must be >= 0, got -5"),
    ("[model]\nlayers = 0", r"model\.layers must be >= 1, got 0"),
    ("[model]\ncuts = -1", r"model\.cuts must be >= 0, got -1"),
    ("[model]\npieces = 1", r"model\.pieces must be >= 2 and <= 26, got 1"),
    ('[execution]\nshot_allocation = "greedy"', r'execution\.shot_allocation must be one of "uniform", "proportional"'),
    ('[model]\nrotations = "rx"', r'model\.rotations must be one of "ry", "ryrz"; got "rx"'),
    ('[execution]\nmode = "noisy"', r"execution\.mode must be one of \"exact\", \"sampled\""),
    ("[execution]\nshots = 0", r"execution\.shots must be > 0, got 0"),
    ('[execution]\ndevice = "gpu"', r'execution\.device must be one of "auto", "CPU", "GPU"; got "gpu"'),
    ('[execution]\nschedule = "guided"', r"execution\.schedule must be one of \"static\", \"dynamic\""),
    ("[execution]\nthreads = -1", r"execution\.threads must be >= 0, got -1"),
    ("[execution]\nstraggler_ranks = [-2]", r"execution\.straggler_ranks\[0\] must be >= 0"),
    ("[execution]\nstraggler_probability = 1.5", r"execution\.straggler_probability must be >= 0 and <= 1"),
    ("[execution]\nstraggler_delay = -0.1", r"execution\.straggler_delay must be >= 0, got -0\.1"),
    ("[execution]\nstraggler_slowdown = 0.5", r"execution\.straggler_slowdown must be >= 1, got 0\.5"),
    ('[training]\noptimizer = "sgd"', r'training\.optimizer must be one of "adam", "spsa"; got "sgd"'),
    ("[training]\nepochs = 0", r"training\.epochs must be >= 1, got 0"),
    ("[training]\nbatch_size = 0", r"training\.batch_size must be >= 1, got 0"),
    ("[training]\nlearning_rate = 0", r"training\.learning_rate must be > 0, got 0\.0"),
    ("[training]\nspsa_perturbation = -0.1", r"training\.spsa_perturbation must be > 0"),
    ("[evaluation]\ngaussian_sigmas = [0.1, -0.2]", r"evaluation\.gaussian_sigmas\[1\] must be >= 0, got -0\.2"),
    ("[evaluation]\ngaussian_draws = 0", r"evaluation\.gaussian_draws must be >= 1, got 0"),
    ("[evaluation]\nfgsm_epsilons = [-1]", r"evaluation\.fgsm_epsilons\[0\] must be >= 0, got -1\.0"),
]


CROSS_FIELD = [
    ("[model]\nlayers = 2\ncuts = 3", r"model\.cuts must be <= model\.layers .*got cuts = 3, layers = 2"),
    ('[data]\ndataset = "mnist"', r'data\.path must name the MNIST .* when data\.dataset = "mnist"'),
    ("[data]\nclasses = [0, 3]", r'data\.classes must be labels from 0 to 2 for data\.dataset = "iris"'),
    ("[model]\npieces = 5", r"model\.pieces must be <= data\.features .*got pieces = 5, features = 4"),
    ('[data]\ndataset = "iris"\nfeatures = 5', r"data\.features must be <= 4 \(the raw feature count of iris\)"),
]


@pytest.mark.parametrize(("text", "pattern"), WRONG_TYPES + OUT_OF_RANGE + CROSS_FIELD)
def test_invalid_values_name_the_key_and_what_is_allowed(text: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=r"^cfg\.toml: " + pattern):
        parse_config(text, source="cfg.toml")


def test_cross_field_values_that_pass() -> None:
    config = parse_config('[data]\ndataset = "mnist"\npath = "/data/mnist"\nclasses = [0, 9]\nfeatures = 16\n'
                          "[model]\nlayers = 2\ncuts = 2\n")
    assert config.data.classes == (0, 9) and config.model.cuts == config.model.layers == 2


# --- --set overrides --------------------------------------------------------------------------


def test_typed_overrides() -> None:
    config = load_config(overrides=[
        "model.layers=5", "model.cuts = 4", "training.learning_rate=0.5", "execution.root_computes=false",
        "evaluation.gaussian_sigmas=[0.1, 0.2]", "data.classes=[0, 2]", 'run.name="quoted name"',
        "execution.straggler_ranks=[]",
    ])
    assert config.model == ModelConfig(layers=5, cuts=4)
    assert config.training.learning_rate == 0.5
    assert config.execution.root_computes is False
    assert config.evaluation.gaussian_sigmas == (0.1, 0.2)
    assert config.data.classes == (0, 2)
    assert config.run.name == "quoted name"
    assert config.execution.straggler_ranks == ()


def test_bare_string_overrides() -> None:
    config = load_config(overrides=["execution.mode=sampled", "execution.device=GPU", "run.name=my run",
                                    "data.dataset=mnist", "data.path=/data/mnist.npz", "training.optimizer=spsa"])
    assert config.execution.mode == "sampled" and config.execution.device == "GPU"
    assert config.run.name == "my run"
    assert config.data.path == "/data/mnist.npz" and config.training.optimizer == "spsa"
    assert load_config(overrides=["data.path="]).data.path == ""


def test_overrides_apply_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text(FULL, encoding="utf-8")
    config = load_config(path, ["model.layers=2", "execution.mode=exact", "model.layers=6"])
    assert config.model.layers == 6 and config.execution.mode == "exact"
    assert config.model.cuts == 2 and config.run == FULL_CONFIG.run


def test_int_override_for_float_and_bool_rejected_for_int() -> None:
    assert load_config(overrides=["execution.straggler_slowdown=3"]).execution.straggler_slowdown == 3.0
    with pytest.raises(
        ConfigError, match=r"^--set training\.epochs=true: training\.epochs must be an integer, got boolean"
    ):
        load_config(overrides=["training.epochs=true"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("model.layers", r"--set model\.layers: an override must look like section\.key=value"),
        ("layers=3", r"--set layers=3: an override must look like section\.key=value"),
        (".layers=3", r"an override must look like section\.key=value"),
        ("model.=3", r"an override must look like section\.key=value"),
        ("modle.layers=3", r"unknown section \[modle\]; valid sections: run, data"),
        ("model.depth=3", r"unknown key model\.depth; valid keys of \[model\]: layers, cuts, rotations"),
        ("model.layers=three", r"model\.layers must be an integer, got string \"three\""),
        ("model.layers=0", r"model\.layers must be >= 1, got 0"),
        ("execution.mode=fast", r"execution\.mode must be one of \"exact\", \"sampled\"; got \"fast\""),
        ("execution.root_computes=yes", r"execution\.root_computes must be a boolean, got string \"yes\""),
        ("evaluation.fgsm_epsilons=[0.1, x]", r"evaluation\.fgsm_epsilons must be an array of floats, got string"),
        ("model.cuts=4", r"model\.cuts must be <= model\.layers"),
        ("data.dataset=mnist", r"data\.path must name the MNIST"),
    ],
)
def test_override_errors(override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_config(overrides=[override])


def test_override_errors_name_the_override_not_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text("[model]\nlayers = 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^--set model\.cuts=3: model\.cuts must be <= model\.layers"):
        load_config(path, ["model.cuts=3"])
    with pytest.raises(ConfigError, match=r"train\.toml: unknown key model\.depth"):
        parse_config("[model]\ndepth = 1\n", ["model.layers=2"], source="train.toml")


def test_override_value_cannot_smuggle_other_keys() -> None:
    with pytest.raises(ConfigError, match=r"model\.layers must be an integer, got string"):
        load_config(overrides=["model.layers=2\ncuts = 9"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.ansatz=\"deep\""], 'model.ansatz must be one of "ladder", "real_amplitudes", "efficient_su2"'),
        (["model.feature_map=\"iqp\""], 'model.feature_map must be one of "ry", "zz"'),
        (["model.readout=\"terms\""], 'model.readout_terms .* go with model.readout = "terms", and that needs them'),
        (["model.readout_terms=[\"ZZZZ\"]"], 'go with model.readout = "terms"'),
        (["model.readout=\"terms\"", "model.readout_terms=[\"ZZ\"]"], "Pauli labels of data.features = 4 letters"),
        (["model.readout=\"terms\"", "model.readout_terms=[\"ZZZZ\"]", "model.readout_weights=[1.0, 2.0]"],
         "one weight per readout term"),
        (["model.init=\"identity_blocks\"", "model.builder=\"pkg.mod:f\""], "needs the built-in model"),
        (["model.init=\"identity_blocks\"", "model.layers=3", "model.cuts=2"],
         r"model.layers must be >= 2 and >= 2 \* model.cuts, got layers = 3, cuts = 2"),
    ],
)
def test_model_choices_are_checked_by_name(overrides, message) -> None:
    with pytest.raises(HpcqnnError, match=message):
        parse_config('[run]\nname = "m"\n', overrides)


def test_model_choices_build_the_configured_circuit() -> None:
    from hpcqnn.training.loop import build_qnn

    config = parse_config(
        '[run]\nname = "m"\n[model]\ncuts = 1\nfeature_map = "zz"\nentangler = "rzz"\nreadout = "terms"\n'
        'readout_terms = ["ZIIZ", "IZZI"]\nreadout_weights = [0.5, -1.0]\ninit = "identity_blocks"\n'
    )
    qnn = build_qnn(config)
    assert qnn.encoding == "zz" and qnn.mirrors and any(i.operation.name == "rzz" for i in qnn.circuit.data)
    assert qnn.observable.paulis.to_labels() == ["ZIIZ", "IZZI"] and list(qnn.observable.coeffs.real) == [0.5, -1.0]
    with pytest.raises(HpcqnnError, match="model.builder: model.builder 'no_such_pkg.models:qnn': cannot import"):
        build_qnn(parse_config('[run]\nname = "m"\n[model]\nbuilder = "no_such_pkg.models:qnn"\n'))
