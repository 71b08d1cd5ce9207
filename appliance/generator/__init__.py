"""Generator: tokenizer and GPT-2 trained on-premise on (pseudonymized) records, and sampling."""
