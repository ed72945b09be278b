"""`icl bench`: training-step throughput of the ICL transformer against paper 2's HuggingFace GPT-2
stack (run.py drives it). Nothing is re-exported: import the module that owns a name."""
