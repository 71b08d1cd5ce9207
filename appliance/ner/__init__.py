"""The NER stage: token classification trained on annotated synthetic notes.

    settings.py   NerSettings (what a run was asked for) and the label scheme
    encoding.py   sub-word tokens, label alignment, overlapping windows, stitching spans back
    model.py      scratch BERT + WordPiece tokenizer, local encoders, the saved model folder
    train.py      the stage: inputs (annotations or gold), dev split, manifest; train_model()
    build.py      building the model (scratch or a local encoder), MLM pretraining on records
    loop.py       the training loop: early stopping, resumable checkpoints, dev scores,
                  partial labels and O sampling
    selftrain.py  self-training: a model re-labels its training notes for a student
    metadata.py   the run's fingerprint and ner.json
    runtime.py    one tagger over PyTorch or onnxruntime backends, batched by length
    package.py    signed model package: manifest of hashes, Ed25519 signature, verification
    export.py     ONNX export, parity check, the int8 decision, model card
    quantize.py   int8: fused graph, smoothing calibrated on synthetic notes, int8 weights
    evaluate.py   entity-level P/R/F1 of a model or package on a gold set
    infer.py      batch inference over record exports: JSONL, CSV, BRAT, FHIR; resumable
    cluster.py    the same inference in an actor pool on a Ray cluster (--engine ray)

The workspace-free core (``train_model``, ``export_package``, ``evaluate``,
``infer.run``) takes plain documents and paths, so the pipeline and
experiments can call it; each module's ``run(ws, ...)`` adds the workspace's
inputs, audit log entries, manifests and locks.
"""
