"""The offline Chinese-to-English translator of prompts (opencc, jieba, CC-CEDICT)."""
