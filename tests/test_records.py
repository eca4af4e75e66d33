"""The identity of a trial (config_hash, trial_key) across versions of the config."""

from __future__ import annotations

from mlplab.experiments.records import config_hash, trial_key
from mlplab.training.config import RunConfig

# The hashes a trial of the default config had before [augmentation], augment_seed and
# label_smoothing existed (computed with the code of commit fc7a017): stores made then hold them.
DEFAULT_CONFIG_HASH_BEFORE_AUGMENTATION = "4abfff4412568f32"
DEFAULT_TRIAL_KEY_BEFORE_AUGMENTATION = "a376f8293fc927ac"


def test_settings_added_later_keep_the_identity_of_trials_stored_before_them():
    config = RunConfig().to_dict()
    assert config_hash(config) == DEFAULT_CONFIG_HASH_BEFORE_AUGMENTATION
    assert trial_key(config) == DEFAULT_TRIAL_KEY_BEFORE_AUGMENTATION


def test_settings_added_later_change_the_identity_when_they_are_used():
    base = RunConfig().to_dict()
    for table, key, value in [
        ("augmentation", "shift", 2.0),
        ("augmentation", "hflip", True),
        ("model", "label_smoothing", 0.1),
    ]:
        changed = RunConfig().to_dict()
        changed[table][key] = value
        assert config_hash(changed) != config_hash(base), (table, key)


def test_the_augment_seed_is_a_seed_grouped_by_config_hash_but_kept_in_the_trial_key():
    first, second = RunConfig().to_dict(), RunConfig().to_dict()
    first["augmentation"]["shift"] = second["augmentation"]["shift"] = 2.0
    second["training"]["augment_seed"] = 7
    assert config_hash(first) == config_hash(second)
    assert trial_key(first) != trial_key(second)
