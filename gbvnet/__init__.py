"""gbvnet: train, tune and honestly evaluate GBV-Net. The packages follow the pipeline:

=====================  ==========================================================================================
``gbvnet.data``        a dataset's files to trials (one module per dataset: reader, synthetic writer, registry
                       entry), the Arrow window cache, loaders and on-device transforms, local or object storage
``gbvnet.prepare``     the preparation of a dataset into a window cache (``python -m gbvnet.prepare``)
``gbvnet.folds``       evaluation protocols and the leakage guard every fold passes
``gbvnet.models``      GBV-Net and the comparison networks
``gbvnet.train``       one training job: the worker loop, its steps, Ray Train / Tune launch
                       (``python -m gbvnet.train``)
``gbvnet.search``      search spaces and Ray Tune + Optuna search (``python tune/search.py``)
``gbvnet.evaluation``  subject-dependent, LOSO, nested, protocol-gap and benchmark evaluations and their reports
                       (``python -m evaluation.loso`` ...)
``gbvnet.predict``     the final model as an MLflow pyfunc, and its use on new recordings
                       (``python -m gbvnet.predict``)
``gbvnet.tracking``    MLflow runs
``gbvnet.cli``         what every command shares: parsers, one-line errors, interrupts, progress
``gbvnet.config``      the configuration dataclasses and the registries (fusions, models, presets)
=====================  ==========================================================================================
"""
