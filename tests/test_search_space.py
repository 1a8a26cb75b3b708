"""Search space files: the shipped ones load, every kind parses, bad files raise ConfigError."""

import pytest

from study.errors import ConfigError
from study.search_space import DEFAULTS, load_search_space


def write_toml(tmp_path, text: str, name: str = "space.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def by_name(space) -> dict:
    return {h.name: h for h in space.hyperparameters}


def test_baseline_loads():
    space = load_search_space("baseline")
    hyperparameters = by_name(space)

    assert space.name == "baseline"
    assert space.training.validation_protocol == "test"
    assert space.tuner.oracle == "grid"
    assert space.tuner.max_trials == 1
    assert {h.type for h in space.hyperparameters} == {"fixed"}
    assert hyperparameters["preprocessing"].default == "scale"
    assert hyperparameters["bn_policy"].default == "trainable"


def test_default_loads():
    space = load_search_space("default")
    hyperparameters = by_name(space)

    assert space.name == "default"
    assert space.training.validation_protocol == "holdout"
    assert space.training.validation_fraction == 0.1
    assert space.tuner.oracle == "bayesian"
    assert hyperparameters["units_1"].type == "choice"
    assert hyperparameters["units_1"].values == (128, 256, 512)
    assert hyperparameters["learning_rate_head"].type == "float"
    assert hyperparameters["learning_rate_head"].sampling == "log"
    assert hyperparameters["dropout"].step == 0.1
    assert hyperparameters["preprocessing"].type == "fixed"


def test_every_hyperparameter_present():
    space = load_search_space("default")

    assert [h.name for h in space.hyperparameters] == list(DEFAULTS)


KINDS_TOML = """
[hyperparameters]
units_1 = 128
units_2 = { type = "int", min = 16, max = 128, step = 16, default = 32 }
learning_rate_head = { type = "float", min = 1e-4, max = 1e-2, sampling = "log", default = 1e-3 }
dropout = { type = "float", min = 0, max = 0.5, step = 0.1 }
l2 = { type = "choice", values = [0.0, 1e-5, 1e-4], default = 1e-5 }
"""


@pytest.fixture
def kinds_space(tmp_path):
    return load_search_space(str(write_toml(tmp_path, KINDS_TOML)))


def test_fixed_value_parses(kinds_space):
    units_1 = by_name(kinds_space)["units_1"]

    assert units_1.type == "fixed"
    assert units_1.default == 128


def test_int_range_parses(kinds_space):
    units_2 = by_name(kinds_space)["units_2"]

    assert units_2.type == "int"
    assert (units_2.min, units_2.max, units_2.step) == (16, 128, 16)
    assert units_2.default == 32
    assert units_2.sampling == "linear"


def test_float_log_range_parses(kinds_space):
    rate = by_name(kinds_space)["learning_rate_head"]

    assert rate.type == "float"
    assert (rate.min, rate.max) == (1e-4, 1e-2)
    assert rate.sampling == "log"
    assert rate.default == 1e-3


def test_float_step_range_parses(kinds_space):
    dropout = by_name(kinds_space)["dropout"]

    assert dropout.type == "float"
    # An integer bound in a float range is read as a float.
    assert isinstance(dropout.min, float)
    assert dropout.step == 0.1
    assert dropout.default == 0.0


def test_choice_parses(kinds_space):
    l2 = by_name(kinds_space)["l2"]

    assert l2.type == "choice"
    assert l2.values == (0.0, 1e-5, 1e-4)
    assert l2.default == 1e-5


def test_omitted_hyperparameters_use_defaults(kinds_space):
    hyperparameters = by_name(kinds_space)

    for name in ("learning_rate_finetune", "preprocessing", "image_size", "bn_policy"):
        assert hyperparameters[name].type == "fixed", name
        assert hyperparameters[name].default == DEFAULTS[name], name


def test_every_kind_declares(kinds_space):
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    values = kinds_space.declare(hp)

    assert values["units_1"] == 128
    assert values["units_2"] == 32
    assert values["learning_rate_head"] == 1e-3
    assert values["l2"] == 1e-5
    assert set(hp.values) == set(DEFAULTS)


def test_int_log_range_declares(tmp_path):
    # The file format allows log sampling for int ranges without a step.
    path = write_toml(
        tmp_path,
        '[hyperparameters]\nunits_1 = { type = "int", min = 16, max = 512, sampling = "log" }\n',
    )
    space = load_search_space(str(path))
    import keras_tuner

    values = space.declare(keras_tuner.HyperParameters())

    assert values["units_1"] == 16


# Each case: an invalid file and the key its error message must name. Keys not
# given in a file take their defaults, so each file contains only the fault.
INVALID_FILES = [
    ("unknown_top_level_key", 'colour = "red"\n', "colour"),
    ("unknown_training_key", "[training]\nepoch_head = 1\n", "training.epoch_head"),
    ("unknown_hyperparameter", "[hyperparameters]\nunits_3 = 8\n", "hyperparameters.units_3"),
    ("epochs_head_string", '[training]\nepochs_head = "ten"\n', "training.epochs_head"),
    ("epochs_head_bool", "[training]\nepochs_head = true\n", "training.epochs_head"),
    ("epochs_finetune_zero", "[training]\nepochs_finetune = 0\n", "training.epochs_finetune"),
    (
        "min_above_max",
        '[hyperparameters]\nunits_1 = { type = "int", min = 512, max = 128 }\n',
        "hyperparameters.units_1",
    ),
    (
        "missing_max",
        '[hyperparameters]\nunits_1 = { type = "int", min = 16 }\n',
        "hyperparameters.units_1.max",
    ),
    (
        "empty_choice",
        '[hyperparameters]\nunits_1 = { type = "choice", values = [] }\n',
        "hyperparameters.units_1.values",
    ),
    (
        "duplicate_choice",
        '[hyperparameters]\nunits_1 = { type = "choice", values = [8, 8] }\n',
        "hyperparameters.units_1.values",
    ),
    (
        "choice_default_missing",
        '[hyperparameters]\nunits_1 = { type = "choice", values = [8, 16], default = 32 }\n',
        "hyperparameters.units_1.default",
    ),
    (
        "log_sampling_min_zero",
        '[hyperparameters]\nl2 = { type = "float", min = 0.0, max = 1e-3, sampling = "log" }\n',
        "hyperparameters.l2",
    ),
    (
        "log_sampling_with_step",
        '[hyperparameters]\nl2 = { type = "float", min = 1e-5, max = 1e-3, '
        'sampling = "log", step = 1e-5 }\n',
        "hyperparameters.l2",
    ),
    (
        "int_log_step_one",
        '[hyperparameters]\nunits_1 = { type = "int", min = 16, max = 512, '
        'sampling = "log", step = 1 }\n',
        "hyperparameters.units_1",
    ),
    (
        "default_outside_range",
        '[hyperparameters]\ndropout = { type = "float", min = 0.0, max = 0.5, default = 0.6 }\n',
        "hyperparameters.dropout.default",
    ),
    (
        "float_range_for_int",
        '[hyperparameters]\nunits_1 = { type = "float", min = 1.0, max = 8.0 }\n',
        "hyperparameters.units_1",
    ),
    (
        "unknown_range_key",
        '[hyperparameters]\nunits_1 = { type = "int", min = 1, max = 8, stride = 2 }\n',
        "hyperparameters.units_1.stride",
    ),
    (
        "unknown_range_type",
        '[hyperparameters]\nunits_1 = { type = "uniform", min = 1, max = 8 }\n',
        "hyperparameters.units_1.type",
    ),
    ("dropout_one", "[hyperparameters]\ndropout = 1.0\n", "hyperparameters.dropout"),
    ("unknown_optimizer", '[training]\noptimizer = "lamb"\n', "training.optimizer"),
    (
        "unknown_preprocessing",
        '[hyperparameters]\npreprocessing = "torch"\n',
        "hyperparameters.preprocessing",
    ),
    ("unknown_oracle", '[tuner]\noracle = "evolution"\n', "tuner.oracle"),
    ("max_trials_zero", "[tuner]\nmax_trials = 0\n", "tuner.max_trials"),
    (
        "unknown_validation_protocol",
        '[training]\nvalidation_protocol = "kfold"\n',
        "training.validation_protocol",
    ),
    (
        "validation_fraction_one",
        "[training]\nvalidation_fraction = 1\n",
        "training.validation_fraction",
    ),
    ("training_not_table", "training = 5\n", "[training]"),
    ("invalid_toml_syntax", "[training\nepochs_head = 1\n", "not valid TOML"),
    (
        "grid_continuous_float",
        '[tuner]\noracle = "grid"\n\n[hyperparameters]\n'
        'learning_rate_head = { type = "float", min = 1e-4, max = 1e-2, sampling = "log" }\n',
        "hyperparameters.learning_rate_head",
    ),
]


@pytest.mark.parametrize(
    ("text", "key"),
    [case[1:] for case in INVALID_FILES],
    ids=[case[0] for case in INVALID_FILES],
)
def test_invalid_file_rejected(tmp_path, text, key):
    path = write_toml(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_search_space(str(path))

    message = str(caught.value)
    assert str(path) in message
    assert key in message


def test_grid_with_float_step_accepted(tmp_path):
    path = write_toml(
        tmp_path,
        '[tuner]\noracle = "grid"\n\n[hyperparameters]\n'
        'dropout = { type = "float", min = 0.0, max = 0.5, step = 0.25 }\n',
    )

    space = load_search_space(str(path))

    assert space.tuner.oracle == "grid"


def test_unknown_name_lists_available():
    with pytest.raises(ConfigError) as caught:
        load_search_space("no_such_space")

    message = str(caught.value)
    assert "'no_such_space'" in message
    assert "baseline" in message
    assert "default" in message


def test_missing_toml_path(tmp_path):
    path = tmp_path / "absent.toml"

    with pytest.raises(ConfigError) as caught:
        load_search_space(str(path))

    assert str(path) in str(caught.value)
    assert "not found" in str(caught.value)


def test_fingerprint_follows_content(tmp_path):
    for folder in ("first", "same", "other"):
        (tmp_path / folder).mkdir()
    first = load_search_space(
        str(write_toml(tmp_path / "first", "[training]\nepochs_head = 1\n", "a.toml"))
    )
    same = load_search_space(
        str(write_toml(tmp_path / "same", "[training]\nepochs_head = 1\n", "a.toml"))
    )
    other = load_search_space(
        str(write_toml(tmp_path / "other", "[training]\nepochs_head = 2\n", "a.toml"))
    )

    assert first.fingerprint == same.fingerprint
    assert first.fingerprint != other.fingerprint
