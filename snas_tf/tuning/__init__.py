"""The library side of `snas tune` (keras-tuner budget search).

- `budget`: a trial's score, measuring a child, the smallest derivable
  child and the budget check;
- `tuner`: the tuned hyperparameters, `SNASTuner` and the oracle;
- `report`: trials.csv, trials.md and the printed lines;
- `resume`: the settings of a tuning directory, checked on resume.

`snas_tf.trainers.tune.run_tune` puts them together.
"""
