"""Latency-aware SNAS: a measured latency table as the resource cost.

- `target`: the target network (a retrain config's child) and its cells;
- `entries`: what a table times (ops, preprocesses, stem, head...) and ids;
- `table`: the table's JSON file, imported timings, and the checks;
- `partial`: the side file of an interrupted build;
- `cost`: per-edge latency tables for the search, a genotype's prediction;
- `penalty`: the expected latency as a SNAS penalty (three estimators);
- `op_models`: the tiny Keras model of one entry (imports Keras).

Building and timing the models is `snas latency-table`
(`snas_tf.trainers.latency_table`, `snas_tf.export.op_latency`).
"""
