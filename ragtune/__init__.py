"""ragtune: fine-tune the retriever, the generator, or both parts of a RAG system for a domain."""

__version__ = "0.1.0"
