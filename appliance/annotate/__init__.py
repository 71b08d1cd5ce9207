"""Annotation: the annotate stage, its annotators, the LLM client, span alignment, the vLLM launcher.

stage.py       the annotate stage: run() over a corpus's released notes
annotators/    annotators in a registry (lexicon, llm) and their ensembles
lexicon.py     lexicon loading (TSV/CSV/OBO) and the token-trie lexicon annotator
prompts.py     entity-schema prompts (zero-shot, few-shot, retrieval) and the response schema
client.py      async OpenAI-compatible client: schema validation, retries, bounded concurrency
cache.py       persistent answer cache (SQLite)
align.py       placing entity strings at exact character offsets
evaluate.py    scoring an annotator against a gold set
serve.py       `vllm serve` on loopback with offline settings

Documents, gold readers and entity metrics are shared with the NER stage:
``appliance.documents`` and ``appliance.metrics``.
"""
