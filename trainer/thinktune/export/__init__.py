"""Export of a fine-tuned model: merge the LoRA adapter, quantize (int8 / int4 / calibrated gptq through
auto-round, as standard checkpoints), verify each variant against the merged model, write a model card. Heavy
imports (torch, transformers, peft, auto-round) live inside functions."""
