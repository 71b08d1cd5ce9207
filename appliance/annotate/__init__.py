"""Annotation: the annotate stage, its annotators, the LLM client, span alignment, model preparation.

stage.py       the annotate stage: run() over a corpus's released notes
annotators/    annotators in a registry (lexicon, llm) and their ensembles
lexicon.py     lexicon loading (TSV/CSV/OBO) and the token-trie lexicon annotator
prompts.py     entity-schema prompts (zero-shot, few-shot, retrieval) and the response schema
client.py      async OpenAI-compatible client: schema validation, retries, bounded concurrency
cache.py       persistent answer cache (SQLite)
align.py       placing entity strings at exact character offsets
evaluate.py    scoring an annotator against a gold set
prepare.py     a GGUF model (file, folder, installed package) into a folder vLLM serves

The vLLM server launcher is ``appliance.llmserver`` (the generator samples
through it too).

Documents, gold readers and entity metrics are shared with the NER stage:
``appliance.documents`` and ``appliance.metrics``.
"""
