"""Cross-encoder reranking: training, reranking runs, evaluation."""
