"""The ML scorer's offline half: features, labels, training and the model registry.

* :mod:`trader.ml.features`: the one feature path, shared by training and
  the scorer actor (O(1) per bar);
* :mod:`trader.ml.labels`: triple-barrier labels on forward bars;
* :mod:`trader.ml.splits`: purged, embargoed walk-forward splits;
* :mod:`trader.ml.train`: the dataset, the models, validation (``trader train``);
* :mod:`trader.ml.registry`: versioned artifacts with a verified manifest.

The live half is :mod:`trader.actors.scorer`. Nothing here runs on the event
loop: training is CPU work for a worker process.
"""
