"""Evaluation of fine-tuned thinking models: perplexity on the assistant turn, BLEU / ROUGE-L (Chinese),
character, term and concept accuracy, thinking-format compliance, and the expert (human) review workflow.

Heavy imports (torch, transformers, jieba, sacrebleu) live inside functions: importing this package is cheap.
"""
