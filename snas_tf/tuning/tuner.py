"""The keras-tuner side of `snas tune`: hyperparameters, tuner, oracle.

Each trial runs a whole search with its own resource constraint strength η
(`search.penalty_strength`) and temperature schedule
(`search.temperature_initial`, `temperature_final`,
`temperature_schedule`), derives the genotype and scores that child
network (`snas_tf.tuning.budget`).

Hyperband is not offered. Its budget is epochs, and a SNAS search of n
epochs is not the first n epochs of a longer one: λ anneals (and θ's
learning rate decays) over the configured epochs, so a short rung scores a
search whose temperature never got low (or one annealed on another
schedule), and promoting a trial by resuming its weights changes its
schedule mid-search. Random search is offered beside Bayesian optimisation.
"""

import dataclasses
import os

import keras
import keras_tuner

from snas_tf.config import Config
from snas_tf.genotype import Genotype
from snas_tf.schedules import TEMPERATURE_SCHEDULES
from snas_tf.tuning.budget import budget_score, measure

ALGORITHMS = ("bayesian", "random")
# Log-uniform ranges. The temperature ranges do not overlap, so λ never
# rises; they bracket the reference's 1.0 -> 0.03 (docs/method.md §2).
RANGES = {
    "penalty_strength": (1e-5, 1e-1),
    "temperature_initial": (0.5, 5.0),
    "temperature_final": (0.01, 0.5),
}
HYPERPARAMETERS = (*RANGES, "temperature_schedule")
# As keras-tuner's default: stop a tuning whose trials keep failing.
MAX_CONSECUTIVE_FAILURES = 3


def trial_config(config: Config, values: dict) -> Config:
    """`config` with a trial's hyperparameter values in `search`."""
    tuned = {
        name: float(values[name]) if name in RANGES else str(values[name])
        for name in HYPERPARAMETERS
    }
    return dataclasses.replace(
        config, search=dataclasses.replace(config.search, **tuned)
    )


def search_hyperparameters() -> keras_tuner.HyperParameters:
    """η and the temperature schedule (log scales), as keras-tuner sees them."""
    hp = keras_tuner.HyperParameters()
    for name, (low, high) in RANGES.items():
        hp.Float(name, low, high, sampling="log")
    hp.Choice("temperature_schedule", list(TEMPERATURE_SCHEDULES))
    return hp


class SNASTuner(keras_tuner.Tuner):
    """Runs one SNAS search per trial and scores its derived child.

    Args:
        oracle: a keras-tuner oracle with the objective `"score"` (max).
        base_config: the search `Config`; each trial replaces its tuned
            `search` fields.
        retrain: the `RetrainConfig` giving the child network's size.
        num_classes: classes of the child network.
        max_params: parameter budget, or None.
        max_madds: multiply-add budget, or None.
        trials_dir: each trial's search writes into `trials_dir/<id>`.
        run_search: runs one search, `run_search(config, model_dir)`, and
            returns its summary (`snas_tf.trainers.search.run_search`,
            passed in: the library does not import the trainers).
        report: called with the oracle's record of each ended trial.
        latency: optional `latency(genotype) -> ms` (a latency table's
            prediction of the child at the retraining size).
        max_latency_ms: latency budget, or None.
        **kwargs: `keras_tuner.Tuner` arguments (directory, project_name).
    """

    def __init__(
        self,
        oracle,
        base_config,
        retrain,
        num_classes,
        max_params,
        max_madds,
        trials_dir,
        run_search,
        report=None,
        latency=None,
        max_latency_ms=None,
        **kwargs,
    ):
        super().__init__(oracle, **kwargs)
        self.latency = latency
        self.max_latency_ms = max_latency_ms
        self.base_config = base_config
        self.retrain = retrain
        self.num_classes = num_classes
        self.max_params = max_params
        self.max_madds = max_madds
        self.trials_dir = trials_dir
        self.run_search = run_search
        self.report = report

    def run_trial(self, trial, *args, **kwargs):
        # Each trial builds a new supernet: drop the previous one's graphs.
        keras.backend.clear_session()
        config = trial_config(self.base_config, trial.hyperparameters.values)
        summary = self.run_search(
            config, os.path.join(self.trials_dir, trial.trial_id)
        )
        accuracy = summary["last_epoch"].get("val_child_accuracy")
        if accuracy is None:
            raise RuntimeError(
                "The search reported no val_child_accuracy for its last epoch."
            )
        genotype = Genotype.from_string(summary["genotype"])
        params, madds = measure(genotype, self.retrain, self.num_classes)
        latency_ms = None if self.latency is None else self.latency(genotype)
        score, within = budget_score(
            accuracy,
            params,
            madds,
            self.max_params,
            self.max_madds,
            latency_ms,
            self.max_latency_ms,
        )
        extra = {} if latency_ms is None else {"latency_ms": latency_ms}
        return {
            **extra,
            "score": score,
            "child_accuracy": float(accuracy),
            "params": float(params),
            "madds": float(madds),
            "within_budget": float(within),
        }

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        if self.report is not None:
            self.report(trial, ended=False)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)  # records the status, saves the state
        if self.report is not None:
            self.report(self.oracle.get_trial(trial.trial_id))


def make_oracle(algorithm, max_trials, seed):
    """The oracle of `algorithm` (ALGORITHMS), maximising `"score"`."""
    kwargs = dict(
        objective=keras_tuner.Objective("score", direction="max"),
        max_trials=max_trials,
        seed=seed,
        hyperparameters=search_hyperparameters(),
        allow_new_entries=False,
        # SNASTuner stops after MAX_CONSECUTIVE_FAILURES itself, after the
        # failed trial's state is saved (keras-tuner raises before).
        max_consecutive_failed_trials=None,
    )
    if algorithm == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(**kwargs)
    return keras_tuner.oracles.RandomSearchOracle(**kwargs)
