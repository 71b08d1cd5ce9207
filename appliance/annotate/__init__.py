"""Annotation: gold readers and metrics, lexicon and LLM annotators, span alignment, the vLLM launcher.

gold.py        Span, Document; CoNLL/BRAT/JSONL readers and writers; word tokens, BIO tags
metrics.py     exact/partial P/R/F1 per type; seqeval strict IOB2 report
lexicon.py     lexicon loading (TSV/CSV/OBO) and the token-trie lexicon annotator
prompts.py     entity-schema prompts (zero-shot, few-shot, retrieval) and the response schema
client.py      async OpenAI-compatible client: schema validation, retries, bounded concurrency
cache.py       persistent answer cache (SQLite)
align.py       placing entity strings at exact character offsets
annotators.py  annotators behind one interface; ensembles
store.py       the annotate stage: run()
evaluate.py    scoring an annotator against a gold set
serve.py       `vllm serve` on loopback with offline settings
"""
