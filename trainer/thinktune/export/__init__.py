"""Export of a fine-tuned model: merge the LoRA adapter, quantize (gptq / bnb / rtn), verify each variant against
the merged model, write a model card. Heavy imports (torch, transformers, peft) live inside functions."""
